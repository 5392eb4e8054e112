"""The resource samples of each build (CPU and memory of its step containers over time), kept
so the dashboard can chart a build after it finished: a capped list per build, expiring."""

from __future__ import annotations

from datetime import datetime

import redis.asyncio as aioredis
from pydantic import BaseModel, ConfigDict

from gobuild.platform.events import BuildResourceSample
from gobuild.platform.stores.keys import key_build_resource_samples

# About one sample a second while a step runs: an hour of samples, the newest kept.
MAX_SAMPLES = 3600
SAMPLES_TTL_SECONDS = 30 * 24 * 3600


class ResourceSample(BaseModel):
    """One stored sample: when it was taken, of which step, and its CPU and memory."""

    model_config = ConfigDict(extra="ignore")

    at: datetime
    step: str
    cpu_percent: float
    memory_bytes: int
    memory_limit_bytes: int | None = None

    @classmethod
    def of(cls, event: BuildResourceSample) -> ResourceSample:
        return cls(
            at=event.occurred_at,
            step=event.step,
            cpu_percent=event.cpu_percent,
            memory_bytes=event.memory_bytes,
            memory_limit_bytes=event.memory_limit_bytes,
        )


class ResourceSampleStore:
    """Append-only, bounded: the newest MAX_SAMPLES samples of a build, for SAMPLES_TTL_SECONDS
    after its last sample."""

    def __init__(
        self,
        redis: aioredis.Redis,
        max_samples: int = MAX_SAMPLES,
        ttl_seconds: int = SAMPLES_TTL_SECONDS,
    ) -> None:
        self.redis = redis
        self.max_samples = max_samples
        self.ttl_seconds = ttl_seconds

    async def append(self, event: BuildResourceSample) -> None:
        key = key_build_resource_samples(event.build_id)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.rpush(key, ResourceSample.of(event).model_dump_json())
            pipe.ltrim(key, -self.max_samples, -1)
            pipe.expire(key, self.ttl_seconds)
            await pipe.execute()

    async def samples(self, build_id: str) -> list[ResourceSample]:
        raw = await self.redis.lrange(key_build_resource_samples(build_id), 0, -1)
        return [ResourceSample.model_validate_json(item) for item in raw]

    async def delete(self, build_id: str) -> None:
        await self.redis.delete(key_build_resource_samples(build_id))
