"""Builders' terminal results until the orchestrator has applied them.

A builder writes a build's completion and terminal status here before it publishes them, and
publishes them again until the build record shows the result: a broker that loses them (or is
down) delays a result, it never loses it. The entries are shared by all builders, so any live
builder delivers what a builder that is gone left behind.
"""

from __future__ import annotations

from datetime import datetime

import redis.asyncio as aioredis
from pydantic import BaseModel, Field

from gobuild.platform.events import BuildCompleted, BuildStatusChanged, utcnow
from gobuild.platform.records import Build
from gobuild.platform.stores.keys import CHANNEL_RESULTS, KEY_RESULT_OUTBOX, key_build_outbox

# An entry nobody could deliver for this long is dropped (the reconcile ended the build).
OUTBOX_TTL_SECONDS = 7 * 24 * 3600


class PendingResult(BaseModel):
    """A build's result as its builder reported it, waiting to be applied."""

    completion: BuildCompleted
    status: BuildStatusChanged
    written_at: datetime = Field(default_factory=utcnow)

    @property
    def build_id(self) -> str:
        return self.completion.build_id

    def settled_by(self, build: Build | None) -> bool:
        """True when the record needs this result no more: it shows it, the build ended
        otherwise (cancelled, timed out by the orchestrator) or is gone."""
        if build is None:
            return True
        if not build.state.is_terminal:
            return False
        if build.state != self.completion.state:
            return True
        # The terminal status alone sets the state; the completion sets its own duration and
        # deployment, so those say whether the completion was applied too.
        return (
            build.duration_seconds == self.completion.duration_seconds
            and build.deployment_id == self.completion.deployment_id
        )


class ResultOutbox:
    """The results in Redis, one key per build plus a set of their build ids."""

    def __init__(self, redis: aioredis.Redis) -> None:
        self.redis = redis

    async def put(self, result: PendingResult) -> None:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.set(
                key_build_outbox(result.build_id),
                result.model_dump_json(),
                ex=OUTBOX_TTL_SECONDS,
            )
            pipe.sadd(KEY_RESULT_OUTBOX, result.build_id)
            # The scheduler hears at once that the build's slot is free.
            pipe.publish(CHANNEL_RESULTS, result.build_id)
            await pipe.execute()

    async def get(self, build_id: str) -> PendingResult | None:
        raw = await self.redis.get(key_build_outbox(build_id))
        return PendingResult.model_validate_json(raw) if raw else None

    async def holds(self, build_id: str) -> bool:
        """Whether a result of the build is waiting to be applied."""
        return bool(await self.redis.exists(key_build_outbox(build_id)))

    async def build_ids(self) -> list[str]:
        return sorted(await self.redis.smembers(KEY_RESULT_OUTBOX))

    async def remove(self, build_id: str) -> None:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.delete(key_build_outbox(build_id))
            pipe.srem(KEY_RESULT_OUTBOX, build_id)
            await pipe.execute()
