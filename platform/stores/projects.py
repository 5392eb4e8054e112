"""Projects in Redis: by id, by name and by repository."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline

from gobuild.platform.records import Project
from gobuild.platform.repo_url import repo_keys
from gobuild.platform.stores.keys import (
    KEY_PROJECTS,
    key_project,
    key_project_by_name,
    key_project_by_repo,
)
from gobuild.platform.stores.optimistic import optimistic_update


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

    async def update(self, project_id: str, change: Callable[[Project], Project]) -> Project | None:
        """Apply `change` to the stored project (read-modify-write, retried on a concurrent
        change); the project as stored, or None if there is none. `change` must keep the
        project's id, name and repository (they are indexed)."""
        key = key_project(project_id)

        async def transaction(pipe: Pipeline) -> Project | None:
            raw = await pipe.get(key)
            if raw is None:
                return None
            changed = change(Project.model_validate_json(raw))
            pipe.multi()
            pipe.set(key, changed.model_dump_json())
            return changed

        return await optimistic_update(self.redis, [key], transaction, what=f"project {project_id}")

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
