"""The `build-logs` consumer: appends each LogChunk to its build's log, then commits.

Offsets are committed only after the lines are on disk, so a crash re-delivers chunks
instead of losing them; LogStore skips what it already wrote.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError

from gobuild.platform.bus import (
    TOPIC_CHECK_SECONDS,
    decode_record,
    ensure_topics,
    make_consumer,
    restore_topics,
)
from gobuild.platform.config import Settings
from gobuild.platform.events import TOPIC_BUILD_LOGS, LogChunk
from gobuild.platform.storage.identifiers import is_valid_build_id
from gobuild.platform.storage.logs import LogStore
from gobuild.platform.waiting import wait_event, wait_within

log = logging.getLogger(__name__)

CONSUMER_GROUP = "storage-logs"
CLIENT_ID = "gobuild-storage-logs"
FETCH_TIMEOUT_MS = 1_000
MAX_RECORDS_PER_FETCH = 500
CONNECT_TIMEOUT_SECONDS = 30.0
COMMIT_TIMEOUT_SECONDS = 10.0
STOP_TIMEOUT_SECONDS = 10.0
# How long stop() lets a running fetch/write/commit cycle finish before cancelling it.
DRAIN_TIMEOUT_SECONDS = 5.0
RETRY_MIN_SECONDS = 0.5
RETRY_MAX_SECONDS = 10.0


class LogConsumer:
    """Owns one background task that consumes `build-logs` until `stop()`.

    Stopping lets the current fetch-write-commit cycle finish, so the group is left cleanly
    and no commit is cut off half-way (a cut-off commit makes the next start wait for the
    broker to expire the old member).
    """

    def __init__(self, settings: Settings, store: LogStore) -> None:
        self.settings = settings
        self.store = store
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._consuming = False

    def start(self) -> None:
        if self._task is not None:
            raise RuntimeError("the log consumer is already running")
        self._stopping = asyncio.Event()
        self._task = asyncio.create_task(self._run(), name="storage-log-consumer")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is None:
            return
        self._stopping.set()
        if self._consuming:
            await asyncio.wait({task}, timeout=DRAIN_TIMEOUT_SECONDS)
        if not task.done():
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def _run(self) -> None:
        """Connect, consume, and on a lost broker reconnect with backoff."""
        delay = RETRY_MIN_SECONDS
        while not self._stopping.is_set():
            consumer: AIOKafkaConsumer | None = None
            try:
                await wait_within(
                    ensure_topics(self.settings, [TOPIC_BUILD_LOGS]), CONNECT_TIMEOUT_SECONDS
                )
                consumer = make_consumer(
                    self.settings,
                    [TOPIC_BUILD_LOGS],
                    CONSUMER_GROUP,
                    client_id=CLIENT_ID,
                    auto_commit=False,
                )
                await wait_within(consumer.start(), CONNECT_TIMEOUT_SECONDS)
                log.info("consuming %s as group %s", TOPIC_BUILD_LOGS, CONSUMER_GROUP)
                delay = RETRY_MIN_SECONDS
                self._consuming = True
                await self._consume(consumer)
            except (KafkaError, OSError, TimeoutError) as exc:
                log.warning("log consumer: broker unavailable (%s); retry in %.1fs", exc, delay)
            except Exception:
                log.exception("log consumer failed; restarting in %.1fs", delay)
            finally:
                self._consuming = False
                if consumer is not None:
                    await _stop_consumer(consumer)
            if not self._stopping.is_set():
                await self._pause(delay)
                delay = min(delay * 2, RETRY_MAX_SECONDS)

    async def _pause(self, seconds: float) -> None:
        """Sleep for a retry backoff, but wake up at once when stopping."""
        await wait_event(self._stopping, seconds)

    async def _consume(self, consumer: AIOKafkaConsumer) -> None:
        retry_delay = RETRY_MIN_SECONDS
        loop = asyncio.get_running_loop()
        next_check = loop.time() + TOPIC_CHECK_SECONDS
        while not self._stopping.is_set():
            if loop.time() >= next_check:
                # A broker that lost `build-logs` gets it back; TopicsMissing rebuilds the consumer.
                await restore_topics(self.settings, consumer, [TOPIC_BUILD_LOGS])
                next_check = loop.time() + TOPIC_CHECK_SECONDS
            batches = await consumer.getmany(
                timeout_ms=FETCH_TIMEOUT_MS, max_records=MAX_RECORDS_PER_FETCH
            )
            if not batches:
                continue
            chunks = [
                chunk
                for records in batches.values()
                for record in records
                if (chunk := _log_chunk(record)) is not None
            ]
            try:
                await self.store.apply(chunks)
            except OSError:
                log.exception("writing logs failed; re-reading the batch in %.1fs", retry_delay)
                _rewind(consumer, batches)
                await self._pause(retry_delay)
                retry_delay = min(retry_delay * 2, RETRY_MAX_SECONDS)
                continue
            retry_delay = RETRY_MIN_SECONDS
            try:
                await wait_within(consumer.commit(), COMMIT_TIMEOUT_SECONDS)
            except (KafkaError, TimeoutError) as exc:
                # The chunks are written; a redelivery after a rebalance is skipped as duplicate.
                log.warning("committing %s offsets failed: %s", TOPIC_BUILD_LOGS, exc)


def _log_chunk(record: ConsumerRecord) -> LogChunk | None:
    event = decode_record(record)
    if event is None:
        return None
    if not isinstance(event, LogChunk):
        log.warning("skipping %s event on %s@%s", event.type, record.topic, record.offset)
        return None
    if not is_valid_build_id(event.build_id):
        log.warning("skipping log chunk with invalid build id %r", event.build_id[:80])
        return None
    return event


def _rewind(
    consumer: AIOKafkaConsumer, batches: dict[TopicPartition, list[ConsumerRecord]]
) -> None:
    for partition, records in batches.items():
        if records:
            consumer.seek(partition, records[0].offset)


async def _stop_consumer(consumer: AIOKafkaConsumer) -> None:
    try:
        await wait_within(consumer.stop(), STOP_TIMEOUT_SECONDS)
    except Exception as exc:
        log.warning("stopping the log consumer failed: %s", exc)
