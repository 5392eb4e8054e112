"""Planning a run: every project's builds and caches held against its policy, giving the
removals to do in order (per build: deployment, artifact, log, then the record; then the
project's unused caches, least recently used first).

Ages count from when a build finished (or, if it never ran, was created); a deployment's
from when it was created; a cache's from when a build last used it. The newest `keep_last`
builds of a project and everything live (`protection`) are left out. Only the caches storage
keeps are planned: each builder prunes its own layer-cache images.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import cast

import redis.asyncio as aioredis

from gobuild.platform.cache_records import STORED_CACHE_KINDS, StoredCacheKind
from gobuild.platform.config import RetentionSettings
from gobuild.platform.records import Build
from gobuild.platform.retention_records import (
    PlannedRemoval,
    RetentionCategory,
    RetentionPolicy,
)
from gobuild.platform.stores.builds import BuildStore
from gobuild.platform.stores.caches import CacheIndex
from gobuild.platform.stores.deployment_records import DeploymentRecords
from gobuild.platform.stores.projects import ProjectStore
from gobuild.platform.stores.retention import GoneLogs
from gobuild.retention.policy import project_policy
from gobuild.retention.protection import LiveCheck
from gobuild.retention.storage_files import StorageFiles

# Build records read per round trip.
BUILD_BATCH = 500


@dataclass
class Plan:
    """The removals of a run, and the builds whose log storage turned out not to have (noted
    so later runs do not ask again)."""

    removals: list[PlannedRemoval] = field(default_factory=list)
    absent_logs: dict[str, list[str]] = field(default_factory=dict)


class RemovalPlanner:
    """Decides what a run removes."""

    def __init__(
        self,
        redis: aioredis.Redis,
        storage: StorageFiles,
        live: LiveCheck,
        settings: RetentionSettings,
    ) -> None:
        self.redis = redis
        self.storage = storage
        self.live = live
        self.settings = settings
        self.builds = BuildStore(redis)
        self.deployments = DeploymentRecords(redis)
        self.gone_logs = GoneLogs(redis)
        self.caches = CacheIndex(redis)

    async def plan(self, now: datetime) -> Plan:
        plan = Plan()
        for project in await ProjectStore(self.redis).list():
            policy, _ = await project_policy(self.redis, self.settings, project.id)
            await self._plan_project(project.id, policy, now, plan)
            plan.removals += await self._unused_caches(project.id, policy, now)
        return plan

    async def _plan_project(
        self, project_id: str, policy: RetentionPolicy, now: datetime, plan: Plan
    ) -> None:
        ids = await self.builds.ids_for_project(project_id)
        # Newest first: the first `keep_last` are kept whole. Planned oldest first.
        candidates = ids[policy.keep_last :][::-1]
        if not candidates:
            return
        production = await self.live.production_deployments(project_id)
        gone_logs = await self.gone_logs.of_project(project_id)
        files_before = now - timedelta(days=policy.artifact_days)
        deployments_before = now - timedelta(days=policy.deployment_days)
        records_before = now - timedelta(days=policy.record_days)
        for start in range(0, len(candidates), BUILD_BATCH):
            for build in await self.builds.get_many(candidates[start : start + BUILD_BATCH]):
                finished = build.finished_at or build.created_at
                if finished >= files_before and finished >= deployments_before:
                    continue  # the common case: nothing of it is old enough
                expire_record = finished < records_before
                expire_files = expire_record or finished < files_before
                due: set[RetentionCategory] = set()
                if build.deployment_id is not None and (
                    expire_record
                    or await self._deployed_before(build.deployment_id, deployments_before)
                ):
                    due.add("deployments")
                if expire_files and build.artifact is not None:
                    due.add("artifacts")
                if expire_files and build.id not in gone_logs:
                    due.add("logs")
                if expire_record:
                    due.add("build_records")
                if due and await self.live.why_build_is_live(build, production) is None:
                    plan.removals += await self._measure(build, due, plan)

    async def _unused_caches(
        self, project_id: str, policy: RetentionPolicy, now: datetime
    ) -> list[PlannedRemoval]:
        """The project's caches in storage that no build used within `cache_days`, least
        recently used first."""
        used_before = now - timedelta(days=policy.cache_days)
        unused = [
            entry
            for entry in await self.caches.entries(project_id)
            if entry.kind in STORED_CACHE_KINDS and entry.last_used_at < used_before
        ]
        return [
            PlannedRemoval(
                category="caches",
                project_id=project_id,
                cache_kind=cast(StoredCacheKind, entry.kind),
                cache_key=entry.key,
                cache_used_at=entry.last_used_at,
                bytes=entry.size_bytes,
            )
            for entry in sorted(unused, key=lambda entry: entry.last_used_at)
        ]

    async def _deployed_before(self, deployment_id: str, before: datetime) -> bool:
        """Whether the deployment was created before `before` (its record gone: its files
        are left over, and due)."""
        deployment = await self.deployments.get(deployment_id)
        return deployment is None or deployment.created_at < before

    async def _measure(
        self, build: Build, due: set[RetentionCategory], plan: Plan
    ) -> list[PlannedRemoval]:
        """The removals of one build, in order (deployment, artifact, log, record), with what
        each holds in storage."""
        removals: list[PlannedRemoval] = []
        project_id = build.project_id
        if "deployments" in due and build.deployment_id is not None:
            size = await self.storage.deployment_size(build.deployment_id)
            removals.append(
                PlannedRemoval(
                    category="deployments",
                    project_id=project_id,
                    build_id=build.id,
                    deployment_id=build.deployment_id,
                    bytes=size or 0,
                )
            )
        if "artifacts" in due and build.artifact is not None:
            removals.append(
                PlannedRemoval(
                    category="artifacts",
                    project_id=project_id,
                    build_id=build.id,
                    bytes=build.artifact.size,
                )
            )
        if "logs" in due:
            size = await self.storage.log_size(build.id)
            if size is None:
                plan.absent_logs.setdefault(project_id, []).append(build.id)
            else:
                removals.append(
                    PlannedRemoval(
                        category="logs", project_id=project_id, build_id=build.id, bytes=size
                    )
                )
        if "build_records" in due:
            removals.append(
                PlannedRemoval(category="build_records", project_id=project_id, build_id=build.id)
            )
        return removals
