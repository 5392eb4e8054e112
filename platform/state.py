"""Shared state in Redis: key names in one place and the reads and writes every service uses."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime

import redis.asyncio as aioredis
from redis.exceptions import WatchError

from gobuild.platform.build_state import BuildState, check_transition
from gobuild.platform.events import (
    BuildCompleted,
    BuildStatusChanged,
    BuildTriggered,
    utcnow,
)
from gobuild.platform.records import Build, Deployment, ProductionAlias, Project
from gobuild.platform.repo_url import repo_keys

PREFIX = "gobuild:"
KEY_PROJECTS = PREFIX + "projects"
KEY_PENDING_TRIGGERS = PREFIX + "triggers:pending"
CHANNEL_CANCEL = PREFIX + "cancel"


def key_project(project_id: str) -> str:
    return f"{PREFIX}project:{project_id}"


def key_project_by_name(name: str) -> str:
    return f"{PREFIX}project-name:{name}"


def key_project_by_repo(repo_key: str) -> str:
    return f"{PREFIX}project-repo:{repo_key}"


def key_project_builds(project_id: str) -> str:
    return f"{PREFIX}project:{project_id}:builds"


def key_project_build_seq(project_id: str) -> str:
    return f"{PREFIX}project:{project_id}:build-seq"


def key_production_alias(project_id: str) -> str:
    return f"{PREFIX}project:{project_id}:production"


def key_build(build_id: str) -> str:
    return f"{PREFIX}build:{build_id}"


def key_trigger(build_id: str) -> str:
    return f"{PREFIX}trigger:{build_id}"


def key_cancel_requested(build_id: str) -> str:
    return f"{PREFIX}build:{build_id}:cancel"


def key_build_claim(build_id: str) -> str:
    return f"{PREFIX}build:{build_id}:claim"


def key_deployment(deployment_id: str) -> str:
    return f"{PREFIX}deployment:{deployment_id}"


def key_delivery(provider: str, delivery_id: str) -> str:
    return f"{PREFIX}delivery:{provider}:{delivery_id}"


def key_builder_heartbeat(builder_id: str) -> str:
    return f"{PREFIX}builder:{builder_id}"


class ProjectStore:
    """Projects by id, by name and by repository."""

    def __init__(self, redis: aioredis.Redis) -> None:
        self.redis = redis

    async def create(self, project: Project) -> bool:
        """Store a new project; False if its name is taken."""
        if not await self.redis.set(key_project_by_name(project.name), project.id, nx=True):
            return False
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.set(key_project(project.id), project.model_dump_json())
            pipe.zadd(KEY_PROJECTS, {project.id: project.created_at.timestamp()})
            for repo_key in repo_keys(project.repo_url):
                pipe.sadd(key_project_by_repo(repo_key), project.id)
            await pipe.execute()
        return True

    async def get(self, project_id: str) -> Project | None:
        raw = await self.redis.get(key_project(project_id))
        return Project.model_validate_json(raw) if raw else None

    async def get_by_name(self, name: str) -> Project | None:
        project_id = await self.redis.get(key_project_by_name(name))
        return await self.get(project_id) if project_id else None

    async def list(self) -> list[Project]:
        ids = await self.redis.zrange(KEY_PROJECTS, 0, -1)
        return await self._many(ids)

    async def find_by_repo(self, urls: Iterable[str]) -> list[Project]:
        """Projects registered for any of the given repository URLs or `owner/name`s."""
        keys: set[str] = set()
        for url in urls:
            keys |= repo_keys(url)
        if not keys:
            return []
        ids = await self.redis.sunion([key_project_by_repo(k) for k in sorted(keys)])
        return sorted(await self._many(ids), key=lambda p: p.created_at)

    async def _many(self, ids: Iterable[str]) -> list[Project]:
        ids = list(ids)
        if not ids:
            return []
        raws = await self.redis.mget([key_project(i) for i in ids])
        return [Project.model_validate_json(r) for r in raws if r]


class BuildStore:
    """Build records and the state machine applied to them."""

    def __init__(self, redis: aioredis.Redis) -> None:
        self.redis = redis

    async def record_trigger(self, build: Build, trigger: BuildTriggered) -> None:
        """Durably record an accepted trigger before the gateway answers 202."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.set(key_build(build.id), build.model_dump_json())
            pipe.zadd(
                key_project_builds(build.project_id), {build.id: build.created_at.timestamp()}
            )
            pipe.set(key_trigger(build.id), trigger.model_dump_json())
            pipe.zadd(KEY_PENDING_TRIGGERS, {build.id: utcnow().timestamp()})
            await pipe.execute()

    async def pending_triggers(self, older_than: datetime | None = None) -> list[BuildTriggered]:
        """Triggers the orchestrator has not processed yet (oldest first)."""
        max_score = older_than.timestamp() if older_than else "+inf"
        ids = await self.redis.zrangebyscore(KEY_PENDING_TRIGGERS, "-inf", max_score)
        if not ids:
            return []
        raws = await self.redis.mget([key_trigger(i) for i in ids])
        return [BuildTriggered.model_validate_json(r) for r in raws if r]

    async def is_pending(self, build_id: str) -> bool:
        return await self.redis.zscore(KEY_PENDING_TRIGGERS, build_id) is not None

    async def forget_trigger(self, build_id: str) -> None:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.zrem(KEY_PENDING_TRIGGERS, build_id)
            pipe.delete(key_trigger(build_id))
            await pipe.execute()

    async def get(self, build_id: str) -> Build | None:
        raw = await self.redis.get(key_build(build_id))
        return Build.model_validate_json(raw) if raw else None

    async def list_for_project(self, project_id: str, limit: int = 50) -> list[Build]:
        ids = await self.redis.zrevrange(key_project_builds(project_id), 0, limit - 1)
        if not ids:
            return []
        raws = await self.redis.mget([key_build(i) for i in ids])
        return [Build.model_validate_json(r) for r in raws if r]

    async def next_number(self, project_id: str) -> int:
        return int(await self.redis.incr(key_project_build_seq(project_id)))

    async def update(self, build_id: str, **changes: object) -> Build | None:
        """Change fields other than `state` atomically (optimistic transaction)."""
        return await self._modify(build_id, lambda build: build.model_copy(update=changes))

    async def apply_status(self, event: BuildStatusChanged) -> Build | None:
        """Apply a status event through the state machine; repeats and illegal moves are no-ops.

        Returns the updated build, or None when nothing changed.
        """

        def change(build: Build) -> Build | None:
            if build.state == event.state:
                # Not a transition: a running build reports its step (and, after a builder
                # was lost, the builder that took it over).
                progress: dict[str, object] = {"step": event.step}
                if event.builder_id:
                    progress["builder_id"] = event.builder_id
                if event.attempt:
                    progress["attempt"] = event.attempt
                if all(getattr(build, k) == v for k, v in progress.items()):
                    return None
                return build.model_copy(update=progress)
            check_transition(build.state, event.state)
            update: dict[str, object] = {"state": event.state, "step": event.step}
            if event.number is not None:
                update["number"] = event.number
            if event.reason:
                update["reason"] = event.reason
            if event.builder_id:
                update["builder_id"] = event.builder_id
            if event.attempt:
                update["attempt"] = event.attempt
            if event.commit_sha:
                update["commit_sha"] = event.commit_sha
            if event.state == BuildState.RUNNING:
                update["started_at"] = event.occurred_at
            if event.state.is_terminal:
                update["finished_at"] = event.occurred_at
                if build.started_at:
                    update["duration_seconds"] = (
                        event.occurred_at - build.started_at
                    ).total_seconds()
            return build.model_copy(update=update)

        return await self._modify(event.build_id, change)

    async def apply_completion(self, event: BuildCompleted) -> Build | None:
        """Record the final result; the terminal state comes through the state machine."""

        def change(build: Build) -> Build | None:
            if build.state != event.state:
                check_transition(build.state, event.state)
            return build.model_copy(
                update={
                    "state": event.state,
                    "finished_at": build.finished_at or event.occurred_at,
                    "duration_seconds": event.duration_seconds,
                    "artifact": event.artifact,
                    "deployment_id": event.deployment_id,
                    "deployment_url": event.deployment_url,
                    "reason": event.error or build.reason,
                    "commit_sha": event.commit_sha or build.commit_sha,
                    "step": None,
                }
            )

        return await self._modify(event.build_id, change)

    async def _modify(self, build_id: str, change: Callable[[Build], Build | None]) -> Build | None:
        key = key_build(build_id)
        async with self.redis.pipeline(transaction=True) as pipe:
            for _ in range(50):
                try:
                    await pipe.watch(key)
                    raw = await pipe.get(key)
                    if raw is None:
                        await pipe.reset()
                        return None
                    updated = change(Build.model_validate_json(raw))
                    if updated is None:
                        await pipe.reset()
                        return None
                    updated = updated.model_copy(update={"updated_at": utcnow()})
                    pipe.multi()
                    pipe.set(key, updated.model_dump_json())
                    await pipe.execute()
                    return updated
                except WatchError:
                    continue
        raise RuntimeError(f"build {build_id} kept changing under a transaction")

    async def request_cancel(self, build_id: str) -> None:
        await self.redis.set(key_cancel_requested(build_id), "1", ex=7 * 24 * 3600)
        await self.redis.publish(CHANNEL_CANCEL, build_id)

    async def cancel_requested(self, build_id: str) -> bool:
        return bool(await self.redis.exists(key_cancel_requested(build_id)))


# Promote a deployment to the production alias only if its build is newer than the current one.
_PROMOTE_IF_NEWER = """
local current = redis.call('GET', KEYS[1])
if current then
  local decoded = cjson.decode(current)
  if tonumber(decoded['number']) >= tonumber(ARGV[2]) then
    return 0
  end
end
redis.call('SET', KEYS[1], ARGV[1])
return 1
"""


class DeploymentStore:
    """Deployments and the production alias of each project."""

    def __init__(self, redis: aioredis.Redis) -> None:
        self.redis = redis

    async def create(self, deployment: Deployment) -> None:
        await self.redis.set(key_deployment(deployment.id), deployment.model_dump_json())

    async def get(self, deployment_id: str) -> Deployment | None:
        raw = await self.redis.get(key_deployment(deployment_id))
        return Deployment.model_validate_json(raw) if raw else None

    async def promote_if_newer(self, deployment: Deployment) -> bool:
        """Point the production alias at `deployment` unless a newer build already holds it."""
        alias = ProductionAlias(deployment_id=deployment.id, number=deployment.number)
        promoted = await self.redis.eval(
            _PROMOTE_IF_NEWER,
            1,
            key_production_alias(deployment.project_id),
            alias.model_dump_json(),
            deployment.number,
        )
        return bool(promoted)

    async def production_alias(self, project_id: str) -> ProductionAlias | None:
        raw = await self.redis.get(key_production_alias(project_id))
        return ProductionAlias.model_validate_json(raw) if raw else None


def connect_redis(url: str) -> aioredis.Redis:
    return aioredis.from_url(
        url, decode_responses=True, socket_timeout=10, health_check_interval=30
    )
