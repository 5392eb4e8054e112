"""Reading what services published, as a test sees it: a topic from its start, without a group."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from gobuild.platform.bus import decode_record, make_consumer
from gobuild.platform.config import Settings
from gobuild.platform.events import Event


async def read_events(
    settings: Settings, topics: Sequence[str], expected: int, wait: float = 5.0, settle: float = 0.5
) -> list[Event]:
    """Events on `topics` from the start: waits up to `wait` s for `expected` of them, then
    `settle` s more so that an unexpected extra one shows up too."""
    consumer = make_consumer(settings, topics, None, client_id="test-reader")
    await consumer.start()
    found: list[Event] = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    try:
        while loop.time() < deadline:
            for records in (await consumer.getmany(timeout_ms=100)).values():
                found.extend(e for e in map(decode_record, records) if e is not None)
            if len(found) >= expected:
                deadline = min(deadline, loop.time() + settle)
    finally:
        await consumer.stop()
    return found
