"""A project's outgoing webhooks in Redis (their secrets encrypted by the caller)."""

from __future__ import annotations

import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline

from gobuild.platform.notification_records import Hook
from gobuild.platform.stores.keys import key_project_hooks
from gobuild.platform.stores.optimistic import optimistic_update

MAX_HOOKS_PER_PROJECT = 20


class TooManyHooks(ValueError):
    """The project has MAX_HOOKS_PER_PROJECT hooks already."""


class HookStore:
    """Hooks by project."""

    def __init__(self, redis: aioredis.Redis) -> None:
        self.redis = redis

    async def add(self, hook: Hook) -> None:
        """Store a new hook; raises TooManyHooks when the project has its maximum."""
        key = key_project_hooks(hook.project_id)

        async def transaction(pipe: Pipeline) -> None:
            if await pipe.hlen(key) >= MAX_HOOKS_PER_PROJECT:
                raise TooManyHooks(
                    f"a project has at most {MAX_HOOKS_PER_PROJECT} hooks; delete one first"
                )
            pipe.multi()
            pipe.hset(key, hook.id, hook.model_dump_json())

        await optimistic_update(self.redis, [key], transaction, what=f"hooks of {hook.project_id}")

    async def list(self, project_id: str) -> list[Hook]:
        """The project's hooks, oldest first."""
        raws = await self.redis.hvals(key_project_hooks(project_id))
        return sorted((Hook.model_validate_json(r) for r in raws), key=lambda h: h.created_at)

    async def get(self, project_id: str, hook_id: str) -> Hook | None:
        raw = await self.redis.hget(key_project_hooks(project_id), hook_id)
        return Hook.model_validate_json(raw) if raw else None

    async def delete(self, project_id: str, hook_id: str) -> bool:
        return bool(await self.redis.hdel(key_project_hooks(project_id), hook_id))
