"""Kafka helpers: topic creation, a producer that waits for `acks=all`, a consumer loop that
logs and skips malformed messages instead of dying.

Only the plain Kafka protocol is used (no idempotent producer, no transactions), so the same
code runs on the embedded Tansu broker and on Apache Kafka. Consumers are idempotent by
event id or build id instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

from gobuild.platform.config import Settings
from gobuild.platform.events import ALL_TOPICS, Event, MalformedEvent, encode_event, parse_event

log = logging.getLogger(__name__)

EventHandler = Callable[[Event], Awaitable[None]]


async def ensure_topics(settings: Settings, topics: Sequence[str] = ALL_TOPICS) -> None:
    """Create the topics that do not exist yet, with the configured partition count."""
    admin = AIOKafkaAdminClient(
        bootstrap_servers=settings.kafka_bootstrap, request_timeout_ms=10_000
    )
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [t for t in topics if t not in existing]
        if missing:
            new = [
                NewTopic(t, settings.kafka_partitions, settings.kafka_replication) for t in missing
            ]
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics(new)
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

    async def ping(self, timeout: float = 3.0) -> bool:
        """True if the broker answers a metadata request."""
        try:
            return bool(
                await asyncio.wait_for(self._producer.client.force_metadata_update(), timeout)
            )
        except (KafkaError, TimeoutError, OSError):
            return False

    async def publish(self, topic: str, event: Event, timeout: float = 10.0) -> None:
        await asyncio.wait_for(
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
) -> AIOKafkaConsumer:
    return AIOKafkaConsumer(
        *topics,
        bootstrap_servers=settings.kafka_bootstrap,
        group_id=group_id,
        client_id=client_id,
        enable_auto_commit=auto_commit,
        auto_offset_reset="earliest" if from_beginning else "latest",
        fetch_max_wait_ms=50,
        max_poll_interval_ms=max_poll_interval_ms,
        session_timeout_ms=10_000,
        heartbeat_interval_ms=1_000,
    )


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


async def consume_forever(consumer: AIOKafkaConsumer, handle: EventHandler) -> None:
    """Hand each valid event to `handle`; a failing handler is logged, the loop goes on."""
    async for record in consumer:
        event = decode_record(record)
        if event is None:
            continue
        try:
            await handle(event)
        except Exception:
            log.exception(
                "handler failed for %s event %s on %s", event.type, event.event_id, record.topic
            )
