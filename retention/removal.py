"""Doing one planned removal, after checking once more that what it names is not live.

Every removal is idempotent (storage answers a delete of something absent like any other,
Redis deletes of absent keys do nothing), so a run resumed after a crash may repeat the one
it was doing.
"""

from __future__ import annotations

import logging

import redis.asyncio as aioredis

from gobuild.platform.retention_records import PlannedRemoval, RemovalOutcome
from gobuild.platform.storage_client import StorageError
from gobuild.platform.stores.builds import BuildStore
from gobuild.platform.stores.caches import CacheIndex
from gobuild.platform.stores.deployment_records import DeploymentRecords
from gobuild.platform.stores.retention import GoneLogs
from gobuild.retention.protection import LiveCheck
from gobuild.retention.storage_files import StorageFiles

log = logging.getLogger(__name__)


class Remover:
    """Removes what a plan names: files (and caches) through storage, records (and the cache
    index) in Redis."""

    def __init__(self, redis: aioredis.Redis, storage: StorageFiles, live: LiveCheck) -> None:
        self.storage = storage
        self.live = live
        self.builds = BuildStore(redis)
        self.deployments = DeploymentRecords(redis)
        self.gone_logs = GoneLogs(redis)
        self.caches = CacheIndex(redis)

    async def remove(self, removal: PlannedRemoval) -> RemovalOutcome:
        reason = await self.live.why_live(removal)
        if reason is not None:
            log.info("retention keeps %s %s: %s", removal.category, removal.subject, reason)
            return RemovalOutcome(removal=removal, result="kept", detail=reason)
        try:
            await self._remove(removal)
        except StorageError as exc:
            log.warning(
                "retention could not remove %s %s: %s", removal.category, removal.subject, exc
            )
            return RemovalOutcome(removal=removal, result="failed", detail=str(exc))
        log.info("retention removed %s %s", removal.category, removal.subject)
        return RemovalOutcome(removal=removal, result="removed")

    async def _remove(self, removal: PlannedRemoval) -> None:
        build_id = removal.build_id
        if removal.category == "deployments":
            assert removal.deployment_id is not None
            deployment = await self.deployments.get(removal.deployment_id)
            if deployment is not None:
                # The record first: from then on it cannot be promoted or served.
                await self.deployments.remove(deployment)
            await self.storage.delete_deployment(removal.deployment_id)
            if build_id is not None:
                await self.builds.update(build_id, deployment_id=None, deployment_url=None)
        elif removal.category == "artifacts":
            assert build_id is not None
            await self.storage.delete_artifact(build_id)
            await self.builds.update(build_id, artifact=None)
        elif removal.category == "logs":
            assert build_id is not None
            await self.storage.delete_log(build_id)
            await self.gone_logs.mark(removal.project_id, [build_id])
        elif removal.category == "caches":
            kind, key = removal.cache_kind, removal.cache_key
            assert kind is not None and key is not None
            # Storage first: an index entry whose archive is gone is a miss, never an error.
            await self.storage.delete_cache(removal.project_id, kind, key)
            entry = await self.caches.get(removal.project_id, kind, key)
            if entry is not None:
                await self.caches.remove(entry)
        else:
            assert build_id is not None
            build = await self.builds.get(build_id)
            if build is not None:
                await self.builds.remove(build)
            await self.gone_logs.forget(removal.project_id, build_id)
