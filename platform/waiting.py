"""Waiting for an event with a time limit, without losing a cancellation.

On Python 3.11 `asyncio.wait_for(event.wait(), seconds)` swallows a cancellation that arrives
in the same loop iteration as the event being set (it returns the result instead): a service
loop woken at the moment it is stopped then goes on forever and its shutdown hangs.
`asyncio.timeout` has no such race.
"""

from __future__ import annotations

import asyncio


async def wait_event(event: asyncio.Event, seconds: float) -> bool:
    """Wait until `event` is set or `seconds` pass; True if it was set."""
    try:
        async with asyncio.timeout(seconds):
            await event.wait()
    except TimeoutError:
        return event.is_set()
    return True
