"""Reading what services published, as a test sees it: a topic without a consumer group,
only the records published since the test began.

All tests share one broker and the topic names are constants, so a topic also holds what
earlier tests published. The `kafka_bootstrap` fixture marks when a test begins; a record
produced before that mark (by its timestamp, set by the producer on this machine) belongs to
an earlier test and is skipped.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

from aiokafka import ConsumerRecord

from gobuild.platform.bus import decode_record, make_consumer
from gobuild.platform.config import Settings
from gobuild.platform.events import Event

_test_began_ms = 0


def mark_test_start() -> None:
    """From now on, records already on the broker belong to earlier tests."""
    global _test_began_ms
    _test_began_ms = time.time_ns() // 1_000_000


def published_in_this_test(record: ConsumerRecord) -> bool:
    return record.timestamp >= _test_began_ms


async def read_events(
    settings: Settings, topics: Sequence[str], expected: int, wait: float = 5.0, settle: float = 0.5
) -> list[Event]:
    """Events this test published on `topics`: waits up to `wait` s for `expected` of them,
    then `settle` s more so that an unexpected extra one shows up too."""
    consumer = make_consumer(settings, topics, None, client_id="test-reader")
    await consumer.start()
    found: list[Event] = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    try:
        while loop.time() < deadline:
            for records in (await consumer.getmany(timeout_ms=100)).values():
                mine = filter(published_in_this_test, records)
                found.extend(e for e in map(decode_record, mine) if e is not None)
            if len(found) >= expected:
                deadline = min(deadline, loop.time() + settle)
    finally:
        await consumer.stop()
    return found
