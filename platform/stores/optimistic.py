"""Optimistic transactions: WATCH keys, read, queue writes after MULTI, retry on a conflict."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline
from redis.exceptions import WatchError

T = TypeVar("T")

TRANSACTION_ATTEMPTS = 50


class TransactionConflict(RuntimeError):
    """The watched keys kept changing for every attempt."""


async def optimistic_update(
    redis: aioredis.Redis,
    watched: Sequence[str],
    transaction: Callable[[Pipeline], Awaitable[T]],
    *,
    what: str,
    attempts: int = TRANSACTION_ATTEMPTS,
) -> T:
    """Run `transaction(pipe)` with `watched` keys under WATCH until it commits.

    `transaction` reads through `pipe` (immediate while watching), then either calls
    `pipe.multi()` and queues its writes, or returns without writing. Its exceptions end the
    loop; a concurrent change to a watched key runs it again, at most `attempts` times.
    """
    async with redis.pipeline(transaction=True) as pipe:
        for _ in range(attempts):
            try:
                await pipe.watch(*watched)
                result = await transaction(pipe)
                if pipe.explicit_transaction:
                    await pipe.execute()
                else:
                    await pipe.reset()
                return result
            except WatchError:
                continue
    raise TransactionConflict(f"{what} kept changing under a transaction")
