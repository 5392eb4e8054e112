"""The Kafka helpers on a real broker: a malformed message never stops a consumer."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from aiokafka import AIOKafkaProducer

from gobuild.platform.build_state import BuildState
from gobuild.platform.bus import EventProducer, consume_forever, make_consumer, wait_for_topics
from gobuild.platform.config import Settings
from gobuild.platform.events import ALL_TOPICS, TOPIC_BUILD_STATUS, BuildStatusChanged, Event


async def test_topics_are_created_with_the_configured_partitions(
    make_settings: Callable[..., Settings], kafka_bootstrap: str
) -> None:
    settings = make_settings(kafka_bootstrap=kafka_bootstrap, kafka_partitions=3)
    await wait_for_topics(settings)
    await wait_for_topics(settings)  # a second start finds them and changes nothing
    producer = EventProducer(settings, client_id="t")
    await producer.start()
    try:
        for topic in ALL_TOPICS:
            assert len(await producer._producer.partitions_for(topic)) == 3
    finally:
        await producer.stop()


async def test_malformed_and_unknown_messages_are_skipped_and_the_consumer_goes_on(
    make_settings: Callable[..., Settings], kafka_bootstrap: str
) -> None:
    settings = make_settings(kafka_bootstrap=kafka_bootstrap, kafka_partitions=1)
    await wait_for_topics(settings)
    raw = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
    producer = EventProducer(settings, client_id="t")
    await raw.start()
    await producer.start()
    received: list[Event] = []
    done = asyncio.Event()

    async def handle(event: Event) -> None:
        if isinstance(event, BuildStatusChanged) and event.build_id == "boom":
            raise RuntimeError("a handler bug must not kill the consumer")
        received.append(event)
        if len(received) == 2:
            done.set()

    consumer = make_consumer(settings, [TOPIC_BUILD_STATUS], None, client_id="t")
    await consumer.start()
    task = asyncio.create_task(consume_forever(consumer, handle))
    try:
        await raw.send_and_wait(TOPIC_BUILD_STATUS, b"\x00not json")
        await raw.send_and_wait(TOPIC_BUILD_STATUS, b'{"type": "build.exploded", "version": 1}')
        await producer.publish(
            TOPIC_BUILD_STATUS,
            BuildStatusChanged(build_id="boom", project_id="p", state=BuildState.QUEUED),
        )
        for build_id in ("b1", "b2"):
            await producer.publish(
                TOPIC_BUILD_STATUS,
                BuildStatusChanged(build_id=build_id, project_id="p", state=BuildState.QUEUED),
            )
        await asyncio.wait_for(done.wait(), 10)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await consumer.stop()
        await producer.stop()
        await raw.stop()
    assert [e.build_id for e in received] == ["b1", "b2"]  # type: ignore[attr-defined]
