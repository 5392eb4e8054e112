"""Waiting for an event with a time limit, without losing a cancellation; stopping tasks.

On Python 3.11 `asyncio.wait_for(event.wait(), seconds)` swallows a cancellation that arrives
in the same loop iteration as the event being set (it returns the result instead): a service
loop woken at the moment it is stopped then goes on forever and its shutdown hangs.
`asyncio.timeout` has no such race; `wait_within` is `wait_for` built on it.

A cancellation can still be lost deeper down, in a library call a loop makes: a task shown
"cancelling" that sleeps on. `cancel_and_wait` stops tasks anyway, by cancelling again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Iterable
from typing import Any, TypeVar

T = TypeVar("T")


async def wait_event(event: asyncio.Event, seconds: float) -> bool:
    """Wait until `event` is set or `seconds` pass; True if it was set."""
    try:
        async with asyncio.timeout(seconds):
            await event.wait()
    except TimeoutError:
        return event.is_set()
    return True


async def wait_within(awaitable: Awaitable[T], timeout: float | None) -> T:
    """`asyncio.wait_for` without its Python 3.11 flaw: a cancellation arriving as `awaitable`
    completes is never swallowed (a loop calling it would otherwise outlive its shutdown).
    Raises TimeoutError after `timeout` seconds, having cancelled what it waited for."""
    async with asyncio.timeout(timeout):
        return await awaitable


# How long a cancelled task may take to end before it is cancelled again.
RECANCEL_SECONDS = 1.0


async def cancel_and_wait(
    tasks: Iterable[asyncio.Future[Any]], *, again_after: float = RECANCEL_SECONDS
) -> None:
    """Cancel `tasks` and return once every one has ended. One still running `again_after`
    seconds later is cancelled again, and again: a cancellation that something it awaited
    swallowed does not keep it, and the service stopping it, running. Their results and
    exceptions stay on the tasks, marked as seen (as `gather(return_exceptions=True)` does)."""
    tasks = list(tasks)
    pending = {task for task in tasks if not task.done()}
    for task in pending:
        task.cancel()
    while pending:
        _, pending = await asyncio.wait(pending, timeout=again_after)
        for task in pending:
            task.cancel()
    for task in tasks:
        if not task.cancelled():
            task.exception()
