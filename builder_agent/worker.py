"""One consumer of `build-requests` in the builders' group: take a job, hand it on, commit.

A job's offset is committed only after its handler returned, so the job of a builder that dies
mid-build is delivered again to another member of the group. A lost broker (an error, a failed
commit, the topic gone) rebuilds the consumer with backoff; the process keeps running.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.errors import CommitFailedError, KafkaError

from gobuild.platform.bus import (
    CONSUMER_START_TIMEOUT_SECONDS,
    TOPIC_CHECK_SECONDS,
    TOPIC_REPAIR_TIMEOUT_SECONDS,
    decode_record,
    ensure_topics,
    make_consumer,
    restore_topics,
)
from gobuild.platform.config import Settings
from gobuild.platform.events import TOPIC_BUILD_REQUESTS, BuildRequested

log = logging.getLogger(__name__)

CONSUMER_GROUP = "builders"
# Time allowed, after the build's own limit, for the consumer to come back to the broker.
POLL_GRACE_SECONDS = 120
# How often a job is retried when the builder itself fails around it (Redis, broker down).
JOB_ATTEMPTS = 5

JobHandler = Callable[[BuildRequested], Awaitable[None]]


class JobWorker:
    """Consumes build jobs one at a time and commits each after `handle` returned."""

    def __init__(self, settings: Settings, client_id: str, handle: JobHandler) -> None:
        self.settings = settings
        self.client_id = client_id
        self.handle = handle

    def _make_consumer(self) -> AIOKafkaConsumer:
        return make_consumer(
            self.settings,
            [TOPIC_BUILD_REQUESTS],
            CONSUMER_GROUP,
            client_id=self.client_id,
            auto_commit=False,
            max_poll_interval_ms=(self.settings.build_timeout_seconds + POLL_GRACE_SECONDS) * 1000,
        )

    async def run(self) -> None:
        """Consume until cancelled; a broker failure reconnects with backoff."""
        delay = 0.5
        topics = [TOPIC_BUILD_REQUESTS]
        while True:
            consumer = self._make_consumer()
            try:
                await asyncio.wait_for(
                    ensure_topics(self.settings, topics), TOPIC_REPAIR_TIMEOUT_SECONDS
                )
                await asyncio.wait_for(consumer.start(), CONSUMER_START_TIMEOUT_SECONDS)
                delay = 0.5
                loop = asyncio.get_running_loop()
                next_check = loop.time() + TOPIC_CHECK_SECONDS
                while True:
                    batch = await consumer.getmany(timeout_ms=1_000, max_records=1)
                    for records in batch.values():
                        for record in records:
                            await self._handle_record(record)
                            await self._commit(consumer, record)
                    if loop.time() >= next_check:
                        await restore_topics(self.settings, consumer, topics)
                        next_check = loop.time() + TOPIC_CHECK_SECONDS
            except asyncio.CancelledError:
                raise
            except (KafkaError, OSError, TimeoutError) as exc:
                log.warning("%s: broker error (%r); retrying in %.1fs", self.client_id, exc, delay)
            except Exception:
                log.exception("%s: consumer failed; rebuilding it in %.1fs", self.client_id, delay)
            finally:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(consumer.stop(), 10)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10.0)

    async def _commit(self, consumer: AIOKafkaConsumer, record: ConsumerRecord) -> None:
        partition = TopicPartition(record.topic, record.partition)
        try:
            await consumer.commit({partition: record.offset + 1})
        except CommitFailedError as exc:
            # The partition moved to another consumer, or the broker lost the group: whoever
            # gets the job again skips it (claim, terminal state, outbox). This consumer is
            # rebuilt, so that it starts from what the group committed, not a stale position.
            log.warning("could not commit %s@%d: %s", partition, record.offset, exc)
            raise

    async def _handle_record(self, record: ConsumerRecord) -> None:
        event = decode_record(record)
        if not isinstance(event, BuildRequested):
            if event is not None:
                log.warning("ignoring %s event on %s", event.type, record.topic)
            return
        for attempt in range(1, JOB_ATTEMPTS + 1):
            try:
                await self.handle(event)
                return
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception(
                    "build %s: handling the job failed (try %d of %d)",
                    event.build_id,
                    attempt,
                    JOB_ATTEMPTS,
                )
                await asyncio.sleep(min(2.0**attempt, 30.0))
        log.error("build %s: giving up on the job", event.build_id)
