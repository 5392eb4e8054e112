"""What the notification service learns of a build from its events, for the messages it sends
later: the step it runs, its commit, and the first error lines of its log (an excerpt)."""

from __future__ import annotations

import redis.asyncio as aioredis

from gobuild.platform.stores.keys import key_build_error_lines, key_build_notes

# A build's notes outlive any retry of its notifications.
NOTES_TTL_SECONDS = 7 * 24 * 3600
# The excerpt: this many error lines of a build, each cut to this many characters.
MAX_ERROR_LINES = 20
MAX_ERROR_LINE_CHARS = 500


class BuildNotes:
    """Per-build notes (a hash) and error-line excerpt (a bounded list), both expiring."""

    def __init__(self, redis: aioredis.Redis) -> None:
        self.redis = redis

    async def remember(self, build_id: str, **fields: str | int | None) -> None:
        """Keep the given facts (None values are left as they were)."""
        known = {name: str(value) for name, value in fields.items() if value is not None}
        if not known:
            return
        key = key_build_notes(build_id)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(key, mapping=known)
            pipe.expire(key, NOTES_TTL_SECONDS)
            await pipe.execute()

    async def get(self, build_id: str) -> dict[str, str]:
        return await self.redis.hgetall(key_build_notes(build_id))

    async def add_error_lines(self, build_id: str, attempt: int, lines: list[str]) -> list[str]:
        """Add error lines to the build's excerpt; returns those that were kept (the excerpt
        holds the first MAX_ERROR_LINES). A new attempt of the build starts a new excerpt.

        The lines of one build arrive in order on one partition, so one consumer adds them."""
        notes_key, lines_key = key_build_notes(build_id), key_build_error_lines(build_id)
        known_attempt = await self.redis.hget(notes_key, "log_attempt")
        if known_attempt is not None and int(known_attempt) > attempt:
            return []  # a late chunk of an attempt that was replaced
        fresh = known_attempt is None or int(known_attempt) < attempt
        held = 0 if fresh else await self.redis.llen(lines_key)
        kept = [line[:MAX_ERROR_LINE_CHARS] for line in lines[: max(0, MAX_ERROR_LINES - held)]]
        async with self.redis.pipeline(transaction=True) as pipe:
            if fresh:
                pipe.delete(lines_key)
                pipe.hset(notes_key, "log_attempt", str(attempt))
                pipe.expire(notes_key, NOTES_TTL_SECONDS)
            if kept:
                pipe.rpush(lines_key, *kept)
                pipe.expire(lines_key, NOTES_TTL_SECONDS)
            await pipe.execute()
        return kept

    async def error_lines(self, build_id: str) -> list[str]:
        return await self.redis.lrange(key_build_error_lines(build_id), 0, -1)
