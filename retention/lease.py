"""Holding the retention lock for the length of a run: taken with a lease, renewed in the
background every third of it, released at the end.

A run that cannot renew (Redis gone, the process paused past the lease) is told it lost the
lock before its next removal; its writes to the plan are fenced by the lock anyway.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import AsyncIterator

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from gobuild.platform.stores.retention import LockLost, RetentionLock

log = logging.getLogger(__name__)

LEASE_SECONDS = 60.0


class RetentionBusy(RuntimeError):
    """Another retention run holds the lock."""


class HeldLease:
    """The lock as one run holds it: its token, and whether it is still held."""

    def __init__(self, lock: RetentionLock, token: str, lease_seconds: float) -> None:
        self.lock = lock
        self.token = token
        self.lease_seconds = lease_seconds
        self.lost = False

    def check(self) -> None:
        """Raise `LockLost` once the lease could not be renewed in time."""
        if self.lost:
            raise LockLost("the retention lock's lease ran out; this run stops")

    async def keep_renewed(self) -> None:
        """Renew until cancelled; mark the lease lost when renewing is refused or keeps
        failing for longer than the lease."""
        loop = asyncio.get_running_loop()
        renewed_at = loop.time()
        while True:
            await asyncio.sleep(self.lease_seconds / 3)
            try:
                if not await self.lock.renew(self.token, self.lease_seconds):
                    self.lost = True
                    log.warning("the retention lock was taken over; this run stops")
                    return
                renewed_at = loop.time()
            except Exception as exc:
                log.warning("renewing the retention lock failed: %s", exc)
                if loop.time() - renewed_at >= self.lease_seconds:
                    self.lost = True
                    return


@contextlib.asynccontextmanager
async def hold_retention_lock(
    redis: aioredis.Redis, lease_seconds: float = LEASE_SECONDS
) -> AsyncIterator[HeldLease]:
    """The retention lock for the duration of the block; `RetentionBusy` if another run
    holds it."""
    lock = RetentionLock(redis)
    token = secrets.token_hex(16)
    if not await lock.acquire(token, lease_seconds):
        raise RetentionBusy("another retention run is in progress")
    held = HeldLease(lock, token, lease_seconds)
    renewal = asyncio.create_task(held.keep_renewed(), name="retention-lock-renewal")
    try:
        yield held
    finally:
        renewal.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await renewal
        try:
            await lock.release(token)
        except (RedisError, OSError) as exc:
            # The lease runs out on its own; the next run waits at most that long.
            log.warning("releasing the retention lock failed: %s", exc)
