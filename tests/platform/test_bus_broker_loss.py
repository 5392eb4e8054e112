"""The Kafka helpers when the broker dies and comes back without its data (the embedded broker
keeps its topics in memory): producers and consumers carry on without a process restart."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator

import pytest
from aiokafka.errors import KafkaError

from gobuild.platform.build_state import BuildState
from gobuild.platform.bus import EventProducer, consume_forever, wait_for_topics
from gobuild.platform.config import Settings
from gobuild.platform.devstack import ChildProcess, free_port, start_broker
from gobuild.platform.events import (
    ALL_TOPICS,
    TOPIC_BUILD_COMPLETIONS,
    TOPIC_DEPLOYMENT_STATUS,
    BuildCompleted,
    Event,
)
from tests.conftest import wait_until


@pytest.fixture
def broker() -> Iterator[ChildProcess]:
    """A broker of this test's own, to kill."""
    child = start_broker(free_port())
    yield child
    child.stop()


def restart_empty(broker: ChildProcess) -> None:
    """SIGKILL the broker and start it again on its port: it has no topics any more."""
    assert broker.process is not None
    broker.process.kill()
    broker.process.wait()
    broker.start()


def completion(build_id: str) -> BuildCompleted:
    return BuildCompleted(
        build_id=build_id, project_id="p_loss", state=BuildState.SUCCEEDED, duration_seconds=1.0
    )


@pytest.fixture
async def producer(
    broker: ChildProcess, make_settings: Callable[..., Settings]
) -> Iterator[EventProducer]:
    settings = make_settings(kafka_bootstrap=f"127.0.0.1:{broker.port}")
    await wait_for_topics(settings)
    producer = EventProducer(settings, client_id="test")
    await producer.start()
    yield producer
    await producer.stop()


async def test_a_consumer_and_a_producer_carry_on_after_the_broker_lost_its_topics(
    broker: ChildProcess, producer: EventProducer, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(kafka_bootstrap=f"127.0.0.1:{broker.port}")
    topics = [TOPIC_BUILD_COMPLETIONS, TOPIC_DEPLOYMENT_STATUS]
    received: list[str] = []

    async def handle(event: Event) -> None:
        received.append(getattr(event, "build_id", "?"))

    joined = asyncio.Event()
    task = asyncio.create_task(
        consume_forever(settings, topics, handle, group_id="g", client_id="t", joined=joined)
    )
    try:
        await asyncio.wait_for(joined.wait(), 30)
        await producer.publish(TOPIC_BUILD_COMPLETIONS, completion("before"))
        await wait_until(lambda: "before" in received, timeout=15, message="nothing consumed")

        await asyncio.to_thread(restart_empty, broker)

        # The consumer finds its topics gone and has them created again.
        async def topics_back() -> bool:
            try:
                return await producer.missing_topics(topics) == []
            except (KafkaError, TimeoutError):
                return False

        await wait_until(topics_back, timeout=30, message="the topics never came back")
        # The same producer and the same consumer loop, without a restart.
        await producer.publish(TOPIC_BUILD_COMPLETIONS, completion("after"))
        await wait_until(
            lambda: "after" in received,
            timeout=60,
            message="the consumer never got what was published after the broker came back",
        )
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert task.cancelled()  # it never died on its own


async def test_missing_topics_tells_a_broker_down_from_one_that_lost_its_topics(
    broker: ChildProcess, producer: EventProducer, make_settings: Callable[..., Settings]
) -> None:
    assert await producer.missing_topics() == []

    assert broker.process is not None
    broker.process.kill()
    broker.process.wait()
    with pytest.raises((KafkaError, TimeoutError)):
        await producer.missing_topics()

    broker.start()  # empty

    async def missing() -> list[str] | None:
        try:
            return await producer.missing_topics()
        except (KafkaError, TimeoutError):
            return None  # still reconnecting

    lost = await wait_until(missing, timeout=30, message="the broker never answered again")
    assert set(lost) == set(ALL_TOPICS)
    await wait_for_topics(make_settings(kafka_bootstrap=f"127.0.0.1:{broker.port}"))
    assert await producer.missing_topics() == []


async def test_a_publish_to_a_topic_the_broker_lost_creates_it_and_is_delivered(
    broker: ChildProcess, producer: EventProducer
) -> None:
    await asyncio.to_thread(restart_empty, broker)

    await producer.publish(TOPIC_DEPLOYMENT_STATUS, completion("x"), timeout=15)

    assert TOPIC_DEPLOYMENT_STATUS not in await producer.missing_topics()


async def test_a_round_trip_reads_back_its_probe_and_fails_while_the_broker_is_down(
    broker: ChildProcess, producer: EventProducer
) -> None:
    await producer.round_trip(timeout=10)
    await producer.round_trip(timeout=10)  # the second probe is found by its own offset

    assert broker.process is not None
    broker.process.kill()
    broker.process.wait()
    with pytest.raises((KafkaError, TimeoutError)):
        await producer.round_trip(timeout=3)


async def test_a_consumer_reads_a_partition_re_created_before_it_noticed_from_its_start(
    broker: ChildProcess, producer: EventProducer, make_settings: Callable[..., Settings]
) -> None:
    """The broker forgets its topics and someone (a producer) re-creates them at once: the
    consumer never sees them missing, but its position is past the new partition's end. It must
    read the new records anyway, not wait until the new log outgrows the old one."""
    settings = make_settings(kafka_bootstrap=f"127.0.0.1:{broker.port}")
    received: list[str] = []

    async def handle(event: Event) -> None:
        received.append(event.event_id)

    joined = asyncio.Event()
    task = asyncio.create_task(
        consume_forever(
            settings, [TOPIC_BUILD_COMPLETIONS], handle, group_id="g", client_id="t", joined=joined
        )
    )
    try:
        await asyncio.wait_for(joined.wait(), 30)
        before = [completion("one-build") for _ in range(6)]  # one key: one partition
        for event in before:
            await producer.publish(TOPIC_BUILD_COMPLETIONS, event)
        await wait_until(lambda: len(received) == 6, timeout=15, message="nothing consumed")

        await asyncio.to_thread(restart_empty, broker)
        await wait_for_topics(settings)  # re-created before the consumer's own check
        after = [completion("one-build") for _ in range(2)]
        for event in after:
            await producer.publish(TOPIC_BUILD_COMPLETIONS, event, timeout=15)

        await wait_until(
            lambda: all(e.event_id in received for e in after),
            timeout=30,
            message="records written to the re-created partition were skipped",
        )
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
