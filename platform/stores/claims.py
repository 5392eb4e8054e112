"""Which builder runs which build: a claim with a lease per build, and each builder's heartbeat.

A builder claims a build before running it and renews the claim with its heartbeat. A claim
held by a builder whose heartbeat is gone is taken over, so a build of a dead builder runs again
instead of being dropped. Only the holder may renew or release a claim (compare-and-act in Lua).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis

from gobuild.platform.stores.held_keys import release_if_held, renew_if_held
from gobuild.platform.stores.keys import (
    KEY_BUILDERS,
    key_build_attempts,
    key_build_claim,
    key_builder_heartbeat,
)

log = logging.getLogger(__name__)

HEARTBEAT_TTL_SECONDS = 15
CLAIM_TTL_SECONDS = 30

_TAKE_OVER_CLAIM = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])
  return 1
end
return 0
"""

# One more attempt, and at least ARGV[1] (the attempt the scheduler gave the job).
_NEXT_ATTEMPT = """
local n = redis.call('INCR', KEYS[1])
if n < tonumber(ARGV[1]) then
  redis.call('SET', KEYS[1], ARGV[1])
  n = tonumber(ARGV[1])
end
return n
"""


class BuildClaims:
    """Claims, leases and the heartbeat of one builder."""

    def __init__(self, redis: aioredis.Redis, builder_id: str) -> None:
        self.redis = redis
        self.builder_id = builder_id

    async def claim(self, build_id: str) -> bool:
        """Claim the build; take it over if its holder's heartbeat is gone. False if held."""
        key = key_build_claim(build_id)
        if await self.redis.set(key, self.builder_id, nx=True, ex=CLAIM_TTL_SECONDS):
            return True
        holder = await self.redis.get(key)
        if holder is None:  # expired in between
            return bool(await self.redis.set(key, self.builder_id, nx=True, ex=CLAIM_TTL_SECONDS))
        if holder == self.builder_id or await self.redis.exists(key_builder_heartbeat(holder)):
            return False
        # The holder stopped beating: it is gone, and its job came back to the group.
        log.info("build %s: taking over from builder %s, which is gone", build_id, holder)
        taken = await self.redis.eval(  # type: ignore[misc]
            _TAKE_OVER_CLAIM, 1, key, holder, self.builder_id, CLAIM_TTL_SECONDS
        )
        return bool(taken)

    async def renew(self, build_id: str) -> None:
        """Extend this builder's claim on the build."""
        await renew_if_held(
            self.redis, key_build_claim(build_id), self.builder_id, CLAIM_TTL_SECONDS
        )

    async def release(self, build_id: str) -> None:
        await release_if_held(self.redis, key_build_claim(build_id), self.builder_id)

    async def next_attempt(self, build_id: str, at_least: int = 1) -> int:
        """Count one more attempt at the build, and no fewer than `at_least` (the scheduler's
        count of its attempts); the first is 1."""
        return int(
            await self.redis.eval(  # type: ignore[misc]
                _NEXT_ATTEMPT, 1, key_build_attempts(build_id), at_least
            )
        )

    async def beat(self, status: dict[str, Any]) -> None:
        """Say this builder is alive (and what it runs) for HEARTBEAT_TTL_SECONDS."""
        now = time.time()
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.set(
                key_builder_heartbeat(self.builder_id),
                json.dumps({**status, "at": now}),
                ex=HEARTBEAT_TTL_SECONDS,
            )
            pipe.zadd(KEY_BUILDERS, {self.builder_id: now})
            # Builders silent for a day are forgotten from the index.
            pipe.zremrangebyscore(KEY_BUILDERS, "-inf", now - 24 * 3600)
            await pipe.execute()

    async def end_heartbeat(self) -> None:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.delete(key_builder_heartbeat(self.builder_id))
            pipe.zrem(KEY_BUILDERS, self.builder_id)
            await pipe.execute()


@dataclass(frozen=True)
class LiveBuilder:
    """A builder whose heartbeat is current, and what that heartbeat says: the builds it runs,
    its slots (`capacity`), labels, host, the host's CPUs and memory, and the projects it has
    warm containers for."""

    id: str
    running: tuple[str, ...]
    capacity: int
    host: str = ""
    labels: tuple[str, ...] = ()
    cpus: int | None = None
    memory_bytes: int | None = None
    started_at: str | None = None
    last_seen: float | None = None
    # A project id for each of its idle warm containers (a build of that project starts
    # there with a `docker exec` instead of a container start).
    warm: tuple[str, ...] = ()

    @property
    def has_free_slot(self) -> bool:
        return len(self.running) < self.capacity

    def has_labels(self, required: Iterable[str]) -> bool:
        """Whether it has every required label (`node`, or `key=value` exactly)."""
        return set(required) <= set(self.labels)


def parse_labels(text: str) -> tuple[str, ...]:
    """`arch=amd64, node` -> ("arch=amd64", "node"): trimmed, empty ones dropped, sorted."""
    return tuple(sorted({label.strip() for label in text.split(",") if label.strip()}))


class BuilderFleet:
    """The builders as the orchestrator and the gateway see them: who is alive, what each
    runs, and which live builder holds a build."""

    def __init__(self, redis: aioredis.Redis) -> None:
        self.redis = redis

    async def live(self) -> dict[str, LiveBuilder]:
        """Every builder whose heartbeat has not expired, by id."""
        recent = await self.redis.zrangebyscore(
            KEY_BUILDERS, time.time() - HEARTBEAT_TTL_SECONDS - 1, "+inf"
        )
        if not recent:
            return {}
        beats = await self.redis.mget([key_builder_heartbeat(b) for b in recent])
        live: dict[str, LiveBuilder] = {}
        for builder_id, raw in zip(recent, beats, strict=True):
            if raw is None:
                continue
            try:
                status = json.loads(raw)
                builder = LiveBuilder(
                    id=builder_id,
                    running=tuple(str(b) for b in status.get("running", ())),
                    capacity=int(status.get("capacity", 1)),
                    host=str(status.get("host", "")),
                    labels=tuple(str(label) for label in status.get("labels", ())),
                    cpus=_optional_int(status.get("cpus")),
                    memory_bytes=_optional_int(status.get("memory_bytes")),
                    started_at=status.get("started_at"),
                    last_seen=_optional_float(status.get("at")),
                    warm=tuple(str(p) for p in status.get("warm", ())),
                )
            except (ValueError, TypeError, AttributeError):
                log.warning("unreadable heartbeat of builder %s", builder_id)
                continue
            live[builder_id] = builder
        return live

    async def holder(self, build_id: str) -> str | None:
        """The builder that holds the build's claim, if that builder is alive."""
        holder = await self.redis.get(key_build_claim(build_id))
        if holder is None or not await self.redis.exists(key_builder_heartbeat(holder)):
            return None
        return str(holder)


def _optional_int(value: Any) -> int | None:
    return None if value is None else int(value)


def _optional_float(value: Any) -> float | None:
    return None if value is None else float(value)
