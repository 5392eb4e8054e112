"""The builder's one consumer of `build-requests`: it takes the jobs the scheduler gave this
builder and runs each as a task, never more than `builder_concurrency` at once.

The consumer reads every partition by manual assignment, so no group is joined (which takes
seconds on the embedded broker and rebalances whenever a builder comes or goes); it skips the
jobs of other builders. Offsets are committed, in a group of this builder's own
(`builder.<id>`), once a job is taken: durability is the scheduler's assignment and its lease
(a job its builder does not claim in time is sent again), not the offset. A lost broker (an
error, the topic gone) rebuilds the consumer with backoff; jobs already taken run on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError

from gobuild.platform.bus import (
    CONSUMER_METADATA_MAX_AGE_MS,
    CONSUMER_START_TIMEOUT_SECONDS,
    FETCH_MAX_WAIT_MS,
    TOPIC_CHECK_SECONDS,
    TOPIC_REPAIR_TIMEOUT_SECONDS,
    TopicsMissing,
    decode_record,
    ensure_topics,
    restore_topics,
)
from gobuild.platform.config import Settings
from gobuild.platform.events import TOPIC_BUILD_REQUESTS, BuildRequested
from gobuild.platform.waiting import cancel_and_wait, wait_within

log = logging.getLogger(__name__)

# How often a job is retried when the builder itself fails around it (Redis, broker down).
JOB_ATTEMPTS = 5

JobHandler = Callable[[BuildRequested], Awaitable[None]]


def consumer_group(builder_id: str) -> str:
    """The group holding one builder's committed offsets (it never has other members)."""
    return f"builder.{builder_id}"


class JobWorker:
    """Consumes the builder's jobs and runs each through `handle` as a task of its own."""

    def __init__(
        self,
        settings: Settings,
        builder_id: str,
        handle: JobHandler,
        *,
        ready: asyncio.Event | None = None,
        on_job_end: Callable[[], None] | None = None,
    ) -> None:
        self.settings = settings
        self.builder_id = builder_id
        self.client_id = f"builder-{builder_id}"
        self.handle = handle
        # Set once the consumer reads every partition: from then on no job for it is missed.
        self.ready = ready or asyncio.Event()
        self.on_job_end = on_job_end
        self.slots = asyncio.Semaphore(settings.builder_concurrency)
        # build id -> the task taking its job to the end (waiting for a slot, or running)
        self.jobs: dict[str, asyncio.Task[None]] = {}

    async def run(self) -> None:
        """Consume until cancelled; then the jobs in progress are cancelled too."""
        try:
            await self._consume_forever()
        finally:
            await cancel_and_wait(list(self.jobs.values()))

    # The consumer ---------------------------------------------------------------------------

    def _make_consumer(self) -> AIOKafkaConsumer:
        return AIOKafkaConsumer(
            bootstrap_servers=self.settings.kafka_bootstrap,
            group_id=consumer_group(self.builder_id),
            client_id=self.client_id,
            enable_auto_commit=False,
            # Only for a position the broker no longer has (it lost its data): all it has now
            # was published since, so it is read from the start.
            auto_offset_reset="earliest",
            fetch_max_wait_ms=FETCH_MAX_WAIT_MS,
            metadata_max_age_ms=CONSUMER_METADATA_MAX_AGE_MS,
        )

    async def _consume_forever(self) -> None:
        delay = 0.5
        topics = [TOPIC_BUILD_REQUESTS]
        first = True
        while True:
            consumer = self._make_consumer()
            try:
                await wait_within(
                    ensure_topics(self.settings, topics), TOPIC_REPAIR_TIMEOUT_SECONDS
                )
                await wait_within(consumer.start(), CONSUMER_START_TIMEOUT_SECONDS)
                partitions = await wait_within(
                    self._assign(consumer, resume_at_end=first), TOPIC_REPAIR_TIMEOUT_SECONDS
                )
                first = False
                delay = 0.5
                self.ready.set()
                log.info("%s: reading jobs from %d partitions", self.client_id, len(partitions))
                await self._consume(consumer, partitions)
            except asyncio.CancelledError:
                raise
            except (KafkaError, OSError, TimeoutError) as exc:
                log.warning("%s: broker error (%r); retrying in %.1fs", self.client_id, exc, delay)
            except Exception:
                log.exception("%s: consumer failed; rebuilding it in %.1fs", self.client_id, delay)
            finally:
                with contextlib.suppress(Exception):
                    await wait_within(consumer.stop(), 10)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10.0)

    async def _assign(
        self, consumer: AIOKafkaConsumer, *, resume_at_end: bool
    ) -> set[TopicPartition]:
        """Read every partition from this builder's committed offsets. Where it has none, a
        builder that starts reads from the end (the scheduler sends it jobs only once it is
        ready); a consumer rebuilt after a broker failure reads from the start (a broker that
        came back without its data holds only what was published since)."""
        numbers = consumer.partitions_for_topic(TOPIC_BUILD_REQUESTS)
        if not numbers:
            raise TopicsMissing(f"{TOPIC_BUILD_REQUESTS} has no partitions yet")
        partitions = {TopicPartition(TOPIC_BUILD_REQUESTS, n) for n in numbers}
        consumer.assign(list(partitions))
        for partition in partitions:
            if await consumer.committed(partition) is None:
                if resume_at_end:
                    await consumer.seek_to_end(partition)
                else:
                    await consumer.seek_to_beginning(partition)
                # Committed at once: a builder restarted before this partition carried a job
                # resumes here, not at a newer end that would skip what was sent meanwhile.
                await consumer.commit({partition: await consumer.position(partition)})
            # The position is fixed now, before the builder says it is ready.
            await consumer.position(partition)
        return partitions

    async def _consume(self, consumer: AIOKafkaConsumer, partitions: set[TopicPartition]) -> None:
        loop = asyncio.get_running_loop()
        next_check = loop.time() + TOPIC_CHECK_SECONDS
        while True:
            batch = await consumer.getmany(timeout_ms=1_000)
            for partition, records in batch.items():
                for record in records:
                    self._take(record)
                if records:
                    await consumer.commit({partition: records[-1].offset + 1})
            if loop.time() >= next_check:
                await restore_topics(self.settings, consumer, [TOPIC_BUILD_REQUESTS])
                numbers = consumer.partitions_for_topic(TOPIC_BUILD_REQUESTS) or set()
                if {p.partition for p in partitions} != numbers:
                    raise TopicsMissing(f"the partitions of {TOPIC_BUILD_REQUESTS} changed")
                next_check = loop.time() + TOPIC_CHECK_SECONDS

    # The jobs -------------------------------------------------------------------------------

    def _take(self, record: ConsumerRecord) -> None:
        event = decode_record(record)
        if not isinstance(event, BuildRequested):
            if event is not None:
                log.warning("ignoring %s event on %s", event.type, record.topic)
            return
        if event.builder_id != self.builder_id:
            return  # another builder's job
        if event.build_id in self.jobs:
            log.info("build %s: its job is taken already; skipping the copy", event.build_id)
            return
        task = asyncio.create_task(self._run_job(event), name=f"job-{event.build_id}")
        self.jobs[event.build_id] = task
        task.add_done_callback(lambda done: self._job_done(event.build_id, done))

    def _job_done(self, build_id: str, task: asyncio.Task[None]) -> None:
        if self.jobs.get(build_id) is task:
            del self.jobs[build_id]
        if not task.cancelled() and task.exception() is not None:
            log.error("build %s: the job failed", build_id, exc_info=task.exception())
        if self.on_job_end is not None:
            self.on_job_end()

    async def _run_job(self, job: BuildRequested) -> None:
        async with self.slots:
            for attempt in range(1, JOB_ATTEMPTS + 1):
                try:
                    await self.handle(job)
                    return
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception(
                        "build %s: handling the job failed (try %d of %d)",
                        job.build_id,
                        attempt,
                        JOB_ATTEMPTS,
                    )
                    await asyncio.sleep(min(2.0**attempt, 30.0))
            log.error("build %s: giving up on the job", job.build_id)
