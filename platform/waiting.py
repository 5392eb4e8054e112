"""Waiting for an event with a time limit, without losing a cancellation.

On Python 3.11 `asyncio.wait_for(event.wait(), seconds)` swallows a cancellation that arrives
in the same loop iteration as the event being set (it returns the result instead): a service
loop woken at the moment it is stopped then goes on forever and its shutdown hangs.
`asyncio.timeout` has no such race; `wait_within` is `wait_for` built on it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

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
