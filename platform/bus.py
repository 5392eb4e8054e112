"""Kafka helpers: topic creation, a producer that waits for `acks=all`, a consumer loop that
logs and skips malformed messages instead of dying.

Only the plain Kafka protocol is used (no idempotent producer, no transactions), so the same
code runs on the embedded Tansu broker and on Apache Kafka. Consumers are idempotent by
event id or build id instead.

A broker may come back without its data (the embedded broker keeps topics in memory): the
producer re-creates a missing topic and sends again, and the consumer loops check their topics
and rebuild their consumer (topics re-created, group joined again) without a process restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

from gobuild.platform.config import Settings
from gobuild.platform.events import (
    ALL_TOPICS,
    TOPIC_BUILD_LOGS,
    TOPIC_HEALTH_PROBES,
    Event,
    MalformedEvent,
    encode_event,
    parse_event,
)
from gobuild.platform.waiting import wait_within

log = logging.getLogger(__name__)

EventHandler = Callable[[Event], Awaitable[None]]

# How often a consumer loop checks that its topics still exist on the broker.
TOPIC_CHECK_SECONDS = 5.0
# A producer checks a topic it publishes to still exists at most this often.
TOPIC_RECHECK_SECONDS = 1.0
# Bounds on one admin or metadata round trip while repairing topics.
TOPIC_REPAIR_TIMEOUT_SECONDS = 10.0
# Starting a consumer includes joining its group (seconds on the embedded broker).
CONSUMER_START_TIMEOUT_SECONDS = 60.0
RECONNECT_MIN_SECONDS = 0.5
RECONNECT_MAX_SECONDS = 10.0
# A consumer notices topics that appear (re-created) on its next metadata refresh.
CONSUMER_METADATA_MAX_AGE_MS = 10_000
# How long the broker may hold a fetch that finds nothing new. A broker that answers as soon
# as a record arrives (Apache Kafka) adds no delay with a longer wait; the embedded one may
# answer only when the wait is up, so consumers a person watches through (builds starting,
# live logs, the scheduler) keep it short, and each of their idle polls costs the broker
# and the consumer a little CPU. Consumers nobody waits on (notifications, which coalesce
# for seconds anyway) wait longer and poll a tenth as often.
FETCH_MAX_WAIT_MS = 50
RELAXED_FETCH_MAX_WAIT_MS = 500


class TopicsMissing(KafkaError):
    """Topics a consumer reads were gone from the broker (it lost its data); they have been
    re-created, and the consumer has to be rebuilt."""


def topic_configs(settings: Settings, topic: str) -> dict[str, str]:
    """The configuration a topic is created with: `build-logs` gets a retention, so a build
    that floods its log cannot fill the broker for good (storage keeps the logs)."""
    if topic != TOPIC_BUILD_LOGS:
        return {}
    return {
        "retention.ms": str(settings.kafka_log_retention_hours * 3600 * 1000),
        "retention.bytes": str(settings.kafka_log_retention_bytes),
    }


def _new_topic(settings: Settings, name: str, *, configured: bool = True) -> NewTopic:
    configs = topic_configs(settings, name) if configured else {}
    return NewTopic(
        name, settings.kafka_partitions, settings.kafka_replication, topic_configs=configs
    )


async def ensure_topics(settings: Settings, topics: Sequence[str] = ALL_TOPICS) -> None:
    """Create the topics that do not exist yet, with the configured partition count and
    their `topic_configs` (existing topics keep theirs)."""
    admin = AIOKafkaAdminClient(
        bootstrap_servers=settings.kafka_bootstrap, request_timeout_ms=10_000
    )
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [t for t in topics if t not in existing]
        if missing:
            response = None
            with contextlib.suppress(TopicAlreadyExistsError):
                response = await admin.create_topics([_new_topic(settings, t) for t in missing])
            # A broker that refuses a topic's configuration still gets the topic, without it:
            # the logs must flow; the retention is a safeguard.
            for name, code, *message in response.topic_errors if response is not None else []:
                if code in (0, TopicAlreadyExistsError.errno) or not topic_configs(settings, name):
                    continue
                log.warning(
                    "the broker refused topic %s with config %s (error %s %s); creating it without",
                    name,
                    topic_configs(settings, name),
                    code,
                    message[0] if message else "",
                )
                with contextlib.suppress(TopicAlreadyExistsError):
                    await admin.create_topics([_new_topic(settings, name, configured=False)])
            log.info("created topics %s", ", ".join(missing))
    finally:
        await admin.close()


async def wait_for_topics(settings: Settings, timeout: float = 60.0) -> None:
    """Ensure the topics exist, retrying with backoff while the broker comes up."""
    delay = 0.2
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        try:
            await ensure_topics(settings)
            return
        except (KafkaError, OSError) as exc:
            if loop.time() + delay > deadline:
                raise
            log.info("broker not ready (%s); retrying in %.1fs", exc, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)


class EventProducer:
    """Publishes events and waits until the broker acknowledged them on all replicas."""

    def __init__(self, settings: Settings, client_id: str) -> None:
        self._settings = settings
        # topic -> loop time it was last found on the broker (or re-created)
        self._checked_at: dict[str, float] = {}
        self._producer = AIOKafkaProducer(
            bootstrap_servers=settings.kafka_bootstrap,
            client_id=client_id,
            acks="all",
            enable_idempotence=False,
            linger_ms=0,
            request_timeout_ms=10_000,
        )

    async def start(self) -> None:
        await self._producer.start()

    async def stop(self) -> None:
        await self._producer.stop()

    async def round_trip(self, timeout: float = 3.0) -> None:
        """Send a probe to the health topic and read it back by its offset: the broker both
        stores and serves records. Raises KafkaError or TimeoutError when it does not."""
        probe = uuid.uuid4().bytes
        async with asyncio.timeout(timeout):
            sent = await self._producer.send_and_wait(TOPIC_HEALTH_PROBES, probe)
            partition = TopicPartition(TOPIC_HEALTH_PROBES, sent.partition)
            reader = AIOKafkaConsumer(
                bootstrap_servers=self._settings.kafka_bootstrap,
                group_id=None,
                enable_auto_commit=False,
                fetch_max_wait_ms=FETCH_MAX_WAIT_MS,
            )
            await reader.start()
            try:
                reader.assign([partition])
                reader.seek(partition, sent.offset)
                while True:
                    batch = await reader.getmany(partition, timeout_ms=200)
                    if any(record.value == probe for record in batch.get(partition, [])):
                        return
            finally:
                await reader.stop()

    async def missing_topics(
        self, topics: Sequence[str] = ALL_TOPICS, timeout: float = 3.0
    ) -> list[str]:
        """Those of `topics` the broker does not have, or has without a leader for every
        partition, by fresh metadata. Raises KafkaError or TimeoutError when it does not answer.
        """
        cluster = await wait_within(self._producer.client.fetch_all_metadata(), timeout)
        missing = []
        for topic in topics:
            partitions = cluster.partitions_for_topic(topic)
            if not partitions or cluster.available_partitions_for_topic(topic) != partitions:
                missing.append(topic)
        return missing

    async def publish(self, topic: str, event: Event, timeout: float = 10.0) -> None:
        """Send and wait for `acks=all`. A broker that lost the topic gets it again (the
        failure is raised when it cannot be re-created) and the event is sent once more."""
        try:
            await self._check_topic(topic, timeout)
        except (KafkaError, TimeoutError, OSError) as exc:
            # Not answering now; sending waits (up to `timeout`) for a broker that comes back.
            log.debug("could not check topic %s: %r", topic, exc)
        try:
            await self._send(topic, event, timeout)
        except (KafkaError, TimeoutError) as exc:
            try:
                await self._restore_topic(topic)
            except (KafkaError, TimeoutError, OSError):
                raise exc from None
            log.info("publishing to %s failed (%r); sending once more", topic, exc)
            await self._send(topic, event, timeout)

    async def send_soon(
        self, topic: str, event: Event, timeout: float = 10.0
    ) -> asyncio.Future[Any]:
        """Queue `event` for the broker without waiting for it: events queued one after the
        other reach their partition in that order. The future is done once the broker took it
        (`acks=all`) or failed to; it is not sent again (for best-effort events)."""
        try:
            await self._check_topic(topic, timeout)
        except (KafkaError, TimeoutError, OSError) as exc:
            log.debug("could not check topic %s: %r", topic, exc)
        sent: asyncio.Future[Any] = await wait_within(
            self._producer.send(topic, encode_event(event), key=event.key()), timeout
        )
        return sent

    async def _check_topic(self, topic: str, timeout: float) -> None:
        """Re-create the topic if the broker lost it (checked at most every
        TOPIC_RECHECK_SECONDS). Needed because the embedded broker acknowledges records sent
        to a topic it does not have, and drops them."""
        now = asyncio.get_running_loop().time()
        if now - self._checked_at.get(topic, float("-inf")) < TOPIC_RECHECK_SECONDS:
            return
        self._checked_at[topic] = now
        try:
            missing = await self.missing_topics([topic], timeout=timeout)
        except (KafkaError, TimeoutError):
            self._checked_at.pop(topic, None)  # checked again on the next publish
            raise
        if missing:
            log.warning("topic %s is gone from the broker; creating it again", topic)
            await self._restore_topic(topic)

    async def _restore_topic(self, topic: str) -> None:
        await wait_within(ensure_topics(self._settings, [topic]), TOPIC_REPAIR_TIMEOUT_SECONDS)
        # Partitions of the re-created topic, not the lost one's.
        await wait_within(
            self._producer.client.force_metadata_update(), TOPIC_REPAIR_TIMEOUT_SECONDS
        )

    async def _send(self, topic: str, event: Event, timeout: float) -> None:
        await wait_within(
            self._producer.send_and_wait(topic, encode_event(event), key=event.key()), timeout
        )


def make_consumer(
    settings: Settings,
    topics: Sequence[str],
    group_id: str | None,
    *,
    client_id: str,
    auto_commit: bool = True,
    from_beginning: bool = True,
    max_poll_interval_ms: int = 300_000,
    fetch_max_wait_ms: int = FETCH_MAX_WAIT_MS,
) -> AIOKafkaConsumer:
    return AIOKafkaConsumer(
        *topics,
        bootstrap_servers=settings.kafka_bootstrap,
        group_id=group_id,
        client_id=client_id,
        enable_auto_commit=auto_commit,
        auto_offset_reset="earliest" if from_beginning else "latest",
        fetch_max_wait_ms=fetch_max_wait_ms,
        max_poll_interval_ms=max_poll_interval_ms,
        session_timeout_ms=10_000,
        heartbeat_interval_ms=1_000,
        metadata_max_age_ms=CONSUMER_METADATA_MAX_AGE_MS,
    )


async def restore_topics(
    settings: Settings, consumer: AIOKafkaConsumer, topics: Sequence[str]
) -> None:
    """Raise TopicsMissing, after re-creating them, when any of `topics` is gone from the
    broker; KafkaError or TimeoutError when the broker does not answer."""
    existing = await wait_within(consumer.topics(), TOPIC_REPAIR_TIMEOUT_SECONDS)
    missing = [t for t in topics if t not in existing]
    if missing:
        await wait_within(ensure_topics(settings, missing), TOPIC_REPAIR_TIMEOUT_SECONDS)
        raise TopicsMissing(f"topics {', '.join(missing)} were missing and are re-created")
    await _rewind_restarted_partitions(consumer)


async def _rewind_restarted_partitions(consumer: AIOKafkaConsumer) -> None:
    """A partition whose end is before this consumer's position lost its records (a broker
    that forgot its topics, and something re-created them before this consumer noticed they
    were gone): read it again from its beginning, or the records written to it since would be
    skipped until the new log grew past the old position."""
    assigned = list(consumer.assignment())
    if not assigned:
        return
    ends = await wait_within(consumer.end_offsets(assigned), TOPIC_REPAIR_TIMEOUT_SECONDS)
    for partition in assigned:
        end = ends.get(partition)
        if end is None:
            continue
        position = await wait_within(consumer.position(partition), TOPIC_REPAIR_TIMEOUT_SECONDS)
        if position > end:
            log.warning(
                "%s[%d] restarted (its end %d is before position %d); reading it from the start",
                partition.topic,
                partition.partition,
                end,
                position,
            )
            await consumer.seek_to_beginning(partition)


def decode_record(record: ConsumerRecord) -> Event | None:
    """Parse a consumed record; a malformed or unknown message is logged and skipped."""
    try:
        return parse_event(record.value)
    except MalformedEvent as exc:
        log.warning(
            "skipping malformed message on %s[%s]@%s: %s",
            record.topic,
            record.partition,
            record.offset,
            exc,
        )
        return None


async def consume_forever(
    settings: Settings,
    topics: Sequence[str],
    handle: EventHandler,
    *,
    group_id: str | None,
    client_id: str,
    joined: asyncio.Event | None = None,
    from_beginning: bool = True,
    fetch_max_wait_ms: int = FETCH_MAX_WAIT_MS,
) -> None:
    """Hand each valid event on `topics` to `handle` until cancelled; a failing handler is
    logged and the loop goes on. Survives a lost broker: on a broker error, or when its topics
    are gone, the consumer is rebuilt (topics re-created, group joined again) with backoff.
    `joined` is set once the first consumer has started. A group without committed offsets
    starts at the oldest record, or with `from_beginning=False` at the newest.
    `fetch_max_wait_ms`: see FETCH_MAX_WAIT_MS."""
    delay = RECONNECT_MIN_SECONDS
    while True:
        consumer = make_consumer(
            settings,
            topics,
            group_id,
            client_id=client_id,
            from_beginning=from_beginning,
            fetch_max_wait_ms=fetch_max_wait_ms,
        )
        try:
            await wait_within(ensure_topics(settings, topics), TOPIC_REPAIR_TIMEOUT_SECONDS)
            await wait_within(consumer.start(), CONSUMER_START_TIMEOUT_SECONDS)
            if joined is not None:
                joined.set()
            delay = RECONNECT_MIN_SECONDS
            await _consume(settings, consumer, topics, handle)
        except (KafkaError, OSError, TimeoutError) as exc:
            log.warning("%s: broker problem (%r); reconnecting in %.1fs", client_id, exc, delay)
        except Exception:
            log.exception("%s: consumer failed; rebuilding it in %.1fs", client_id, delay)
        finally:
            with contextlib.suppress(Exception):
                await wait_within(consumer.stop(), TOPIC_REPAIR_TIMEOUT_SECONDS)
        await asyncio.sleep(delay)
        delay = min(delay * 2, RECONNECT_MAX_SECONDS)


async def _consume(
    settings: Settings, consumer: AIOKafkaConsumer, topics: Sequence[str], handle: EventHandler
) -> None:
    loop = asyncio.get_running_loop()
    next_check = loop.time() + TOPIC_CHECK_SECONDS
    while True:
        batches = await consumer.getmany(timeout_ms=1_000)
        for records in batches.values():
            for record in records:
                event = decode_record(record)
                if event is None:
                    continue
                try:
                    await handle(event)
                except Exception:
                    log.exception(
                        "handler failed for %s event %s on %s",
                        event.type,
                        event.event_id,
                        record.topic,
                    )
        if loop.time() >= next_check:
            await restore_topics(settings, consumer, topics)
            next_check = loop.time() + TOPIC_CHECK_SECONDS
