"""The Kafka helpers on a real broker: a malformed message never stops a consumer."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable

from aiokafka import AIOKafkaProducer

from gobuild.platform.build_state import BuildState
from gobuild.platform.bus import EventProducer, consume_forever, wait_for_topics
from gobuild.platform.config import Settings
from gobuild.platform.events import (
    ALL_TOPICS,
    TOPIC_BUILD_STATUS,
    BuildStatusChanged,
    Event,
    encode_event,
)


async def test_topics_are_created_with_the_configured_partitions(
    make_settings: Callable[..., Settings], fresh_kafka_bootstrap: str
) -> None:
    settings = make_settings(kafka_bootstrap=fresh_kafka_bootstrap, kafka_partitions=3)
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
    settings = make_settings(kafka_bootstrap=kafka_bootstrap)
    # All on one partition, so the good events come after the bad ones for the consumer too.
    raw = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    project_id = f"p_{uuid.uuid4().hex}"
    received: list[Event] = []
    done = asyncio.Event()

    def status(build_id: str) -> bytes:
        return encode_event(
            BuildStatusChanged(build_id=build_id, project_id=project_id, state=BuildState.QUEUED)
        )

    async def handle(event: Event) -> None:
        if getattr(event, "project_id", None) != project_id:
            return  # another test's
        if isinstance(event, BuildStatusChanged) and event.build_id == "boom":
            raise RuntimeError("a handler bug must not kill the consumer")
        received.append(event)
        if len(received) == 2:
            done.set()

    await raw.start()
    joined = asyncio.Event()
    task = asyncio.create_task(
        consume_forever(
            settings, [TOPIC_BUILD_STATUS], handle, group_id=None, client_id="t", joined=joined
        )
    )
    try:
        await asyncio.wait_for(joined.wait(), 30)
        for value in (
            b"\x00not json",
            b'{"type": "build.exploded", "version": 1}',
            status("boom"),
            status("b1"),
            status("b2"),
        ):
            await raw.send_and_wait(TOPIC_BUILD_STATUS, value, partition=0)
        await asyncio.wait_for(done.wait(), 10)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await raw.stop()
    assert [e.build_id for e in received] == ["b1", "b2"]  # type: ignore[attr-defined]
