"""A builder's result survives a broker that is down or comes back without its data: it waits in
the outbox in Redis and is published again until the build record shows it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator

import pytest
import redis.asyncio as aioredis

from gobuild.builder_agent import delivery as delivery_module
from gobuild.builder_agent.delivery import ResultDelivery
from gobuild.builder_agent.reporter import BuildReporter
from gobuild.platform.build_state import BuildState
from gobuild.platform.bus import EventProducer, decode_record, make_consumer, wait_for_topics
from gobuild.platform.config import Settings
from gobuild.platform.devstack import ChildProcess, free_port, start_broker
from gobuild.platform.events import (
    TOPIC_BUILD_COMPLETIONS,
    BuildCompleted,
    BuildStatusChanged,
    BuildTriggered,
)
from gobuild.platform.records import Build, new_id
from gobuild.platform.stores.builds import BuildStore
from gobuild.platform.stores.outbox import PendingResult, ResultOutbox
from tests.conftest import wait_until


@pytest.fixture
def broker() -> Iterator[ChildProcess]:
    """A broker of this test's own, to kill."""
    child = start_broker(free_port())
    yield child
    child.stop()


@pytest.fixture
async def settings(broker: ChildProcess, make_settings: Callable[..., Settings]) -> Settings:
    settings = make_settings(kafka_bootstrap=f"127.0.0.1:{broker.port}")
    await wait_for_topics(settings)
    return settings


@pytest.fixture
async def delivery(
    settings: Settings, redis: aioredis.Redis, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[ResultDelivery]:
    # The backoff starts small so that the test does not wait for it.
    monkeypatch.setattr(delivery_module, "REDELIVERY_FIRST_DELAY_SECONDS", 0.2)
    producer = EventProducer(settings, client_id="builder-test")
    await producer.start()
    yield ResultDelivery(
        ResultOutbox(redis), BuildStore(redis), BuildReporter(producer, "builder-1")
    )
    await producer.stop()


async def running_build(redis: aioredis.Redis) -> Build:
    build = Build(
        id=new_id("b_"), project_id="p_1", source="api", repo_url="/srv/x.git", ref="refs/heads/m"
    )
    trigger = BuildTriggered(
        build_id=build.id,
        project_id="p_1",
        source="api",
        repo_url=build.repo_url,
        ref=build.ref,
        branch=None,
        commit_sha=None,
    )
    builds = BuildStore(redis)
    await builds.record_trigger(build, trigger)
    for state in (BuildState.DISPATCHED, BuildState.RUNNING):
        await builds.apply_status(
            BuildStatusChanged(build_id=build.id, project_id="p_1", state=state)
        )
    return build


def succeeded(build: Build) -> PendingResult:
    return PendingResult(
        completion=BuildCompleted(
            build_id=build.id,
            project_id=build.project_id,
            state=BuildState.SUCCEEDED,
            duration_seconds=4.25,
            deployment_id="x-1",
            deployment_url="http://x-1.localhost/",
            builder_id="builder-1",
        ),
        status=BuildStatusChanged(
            build_id=build.id,
            project_id=build.project_id,
            state=BuildState.SUCCEEDED,
            builder_id="builder-1",
        ),
    )


async def completions_on_broker(settings: Settings) -> list[BuildCompleted]:
    """Every completion the (fresh) broker holds."""
    consumer = make_consumer(settings, [TOPIC_BUILD_COMPLETIONS], None, client_id="test-reader")
    await consumer.start()
    try:
        batches = await consumer.getmany(timeout_ms=1_000)
    finally:
        await consumer.stop()
    events = [decode_record(r) for records in batches.values() for r in records]
    return [e for e in events if isinstance(e, BuildCompleted)]


async def test_a_result_the_broker_lost_is_published_again_until_the_record_shows_it(
    broker: ChildProcess, settings: Settings, redis: aioredis.Redis, delivery: ResultDelivery
) -> None:
    build = await running_build(redis)
    result = succeeded(build)
    assert broker.process is not None
    broker.process.kill()
    broker.process.wait()

    await delivery.deliver(result)  # the broker is down: kept, not raised

    assert await delivery.is_pending(build.id)
    broker.start()  # back, without any of its topics or records

    async def published_again() -> list[BuildCompleted]:
        await delivery.redeliver_due()
        return [c for c in await completions_on_broker(settings) if c.build_id == build.id]

    again = await wait_until(published_again, timeout=60, message="never published again")
    # The same event, maybe more than once (the first send may still go out late).
    assert {c.event_id for c in again} == {result.completion.event_id}
    assert again[0] == result.completion
    assert await delivery.is_pending(build.id)  # not applied yet: it stays

    # The orchestrator applies it; the next pass sees that and lets the result go.
    builds = BuildStore(redis)
    await builds.apply_status(result.status)
    await delivery.redeliver_due()
    assert await delivery.is_pending(build.id)  # the status alone is not the completion
    await builds.apply_completion(result.completion)
    await delivery.redeliver_due()
    assert not await delivery.is_pending(build.id)
    assert await ResultOutbox(redis).build_ids() == []


async def test_a_result_is_let_go_when_the_build_ended_otherwise(
    redis: aioredis.Redis, delivery: ResultDelivery
) -> None:
    build = await running_build(redis)
    await ResultOutbox(redis).put(succeeded(build))
    # Cancelled while its builder was gone: the result can no longer apply.
    await BuildStore(redis).apply_status(
        BuildStatusChanged(build_id=build.id, project_id="p_1", state=BuildState.CANCELLED)
    )

    await delivery.redeliver_due()

    assert not await delivery.is_pending(build.id)


async def test_a_delivered_result_is_removed_once_applied(
    settings: Settings, redis: aioredis.Redis, delivery: ResultDelivery
) -> None:
    build = await running_build(redis)
    result = succeeded(build)

    await delivery.deliver(result)

    assert [c.build_id for c in await completions_on_broker(settings)] == [build.id]
    await BuildStore(redis).apply_completion(result.completion)
    await delivery.redeliver_due()
    assert not await delivery.is_pending(build.id)
