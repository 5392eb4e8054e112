"""The cache index in Redis: every cache a project has (one hash per project), and the lease a
build holds while it saves one, so two builds of one project never save the same cache."""

from __future__ import annotations

import secrets

import redis.asyncio as aioredis
from pydantic import ValidationError

from gobuild.platform.cache_records import CacheEntry, cache_field
from gobuild.platform.events import CacheKind, utcnow
from gobuild.platform.stores.held_keys import release_if_held
from gobuild.platform.stores.keys import key_cache_save_lease, key_project_caches


class CacheIndex:
    """Which caches each project has, their size, origin and last use."""

    def __init__(self, redis: aioredis.Redis) -> None:
        self.redis = redis

    async def get(self, project_id: str, kind: CacheKind, key: str) -> CacheEntry | None:
        raw = await self.redis.hget(key_project_caches(project_id), cache_field(kind, key))
        return _parse(raw) if raw else None

    async def entries(self, project_id: str, kind: CacheKind | None = None) -> list[CacheEntry]:
        """The project's caches (of one kind), newest first."""
        raws = await self.redis.hvals(key_project_caches(project_id))
        found = [entry for entry in map(_parse, raws) if entry is not None]
        if kind is not None:
            found = [entry for entry in found if entry.kind == kind]
        return sorted(found, key=lambda entry: entry.created_at, reverse=True)

    async def record(self, entry: CacheEntry) -> None:
        await self.redis.hset(
            key_project_caches(entry.project_id), entry.field, entry.model_dump_json()
        )

    async def touch(self, entry: CacheEntry) -> None:
        """Note that a build used the cache now (the least recently used go first)."""
        used = entry.model_copy(update={"last_used_at": utcnow()})
        key = key_project_caches(entry.project_id)
        # Only while it is still there: a cache cleared meanwhile stays cleared.
        if await self.redis.hexists(key, entry.field):
            await self.redis.hset(key, entry.field, used.model_dump_json())

    async def remove(self, entry: CacheEntry) -> None:
        await self.redis.hdel(key_project_caches(entry.project_id), entry.field)

    async def clear(self, project_id: str) -> list[CacheEntry]:
        """Forget every cache of the project; the ones it had."""
        key = key_project_caches(project_id)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hvals(key)
            pipe.delete(key)
            raws, _ = await pipe.execute()
        return [entry for entry in map(_parse, raws) if entry is not None]

    async def claim_save(
        self, project_id: str, kind: CacheKind, key: str, lease_seconds: int
    ) -> str | None:
        """A token if this build may save the cache now; None while another build saves it."""
        token = secrets.token_hex(16)
        lease = key_cache_save_lease(project_id, kind, key)
        if await self.redis.set(lease, token, nx=True, ex=lease_seconds):
            return token
        return None

    async def release_save(self, project_id: str, kind: CacheKind, key: str, token: str) -> None:
        await release_if_held(self.redis, key_cache_save_lease(project_id, kind, key), token)


def _parse(raw: str) -> CacheEntry | None:
    try:
        return CacheEntry.model_validate_json(raw)
    except ValidationError:
        return None
