"""A builder's status changes and its completion travel on two topics, so the orchestrator's
records consumer may receive the completion before the last progress events of the build
(it used to log "cannot go from 'succeeded' to 'running'"). Numbered by the builder (`seq`),
they leave the record as if they had come in order, without a warning."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import cast

import pytest
import redis.asyncio as aioredis

from gobuild.builder_agent.build_run import Outcome
from gobuild.builder_agent.reporter import BuildReporter
from gobuild.platform.build_state import BuildState
from gobuild.platform.bus import EventProducer, consume_forever, wait_for_topics
from gobuild.platform.config import Settings
from gobuild.platform.events import (
    TOPIC_BUILD_COMPLETIONS,
    TOPIC_BUILD_STATUS,
    ArtifactRef,
    BuildStatusChanged,
    BuildTriggered,
    Event,
)
from gobuild.platform.orchestrator.dispatch import Dispatcher
from gobuild.platform.records import Build
from gobuild.platform.stores.builds import BuildStore
from gobuild.platform.stores.outbox import PendingResult
from gobuild.platform.stores.projects import ProjectStore
from tests.conftest import wait_until
from tests.orchestrator.builder_runs import api_build, builder_run

STEPS = ("checkout", "install", "build", "upload", "deploy")


class RecordingProducer:
    """Keeps what a builder publishes, so the test delivers it in an order of its choosing."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    async def publish(self, topic: str, event: Event) -> None:
        self.events.append(event)

    async def send_soon(self, topic: str, event: Event) -> asyncio.Future[None]:
        """Progress events: kept at once, as a broker that took them."""
        self.events.append(event)
        taken: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        taken.set_result(None)
        return taken


async def dispatched_build(redis: aioredis.Redis) -> Build:
    """A recorded build the orchestrator has dispatched (its own event, applied directly)."""
    build = api_build()
    trigger = BuildTriggered(
        build_id=build.id,
        project_id=build.project_id,
        source="api",
        repo_url=build.repo_url,
        ref=build.ref,
        branch="main",
        commit_sha=None,
    )
    builds = BuildStore(redis)
    await builds.record_trigger(build, trigger)
    await builds.apply_status(
        BuildStatusChanged(
            build_id=build.id, project_id="p_1", state=BuildState.DISPATCHED, number=1
        )
    )
    return build


async def builder_events(
    settings: Settings, build: Build, outcome: Outcome
) -> tuple[list[BuildStatusChanged], PendingResult]:
    """The progress events and the result a builder's reporter makes for a run through
    every step to `outcome`."""
    recorder = RecordingProducer()
    producer = cast(EventProducer, recorder)
    reporter = BuildReporter(producer, "builder-1")
    run = builder_run(settings, build, producer)
    await reporter.status(run, BuildState.RUNNING)
    for step in STEPS:
        await asyncio.sleep(0.002)  # steps that take time, so each has its own start
        if outcome.state == BuildState.FAILED and step == "upload":
            break
        await reporter.status(run, BuildState.RUNNING, step=step)
    await asyncio.sleep(0.002)
    progress = [cast(BuildStatusChanged, e) for e in recorder.events]
    return progress, reporter.result(run, outcome, 3.5)


SUCCEEDED = Outcome(
    BuildState.SUCCEEDED,
    artifact=ArtifactRef(name="a.tar.gz", sha256="f" * 64, size=10),
    deployment_id="site-abc",
    deployment_url="http://site-abc.localhost:8080/",
)


def shown(build: Build | None) -> dict[str, object]:
    """What the API shows of a build's progress and result."""
    assert build is not None
    return build.model_dump(
        include={
            "state",
            "step",
            "reason",
            "steps",
            "started_at",
            "finished_at",
            "duration_seconds",
            "builder_id",
            "attempt",
            "commit_sha",
            "deployment_url",
        }
    )


@pytest.mark.parametrize(
    "outcome", [SUCCEEDED, Outcome(BuildState.FAILED, "step 'build' exited with code 2")]
)
async def test_a_completion_that_overtook_the_progress_events_leaves_the_record_as_in_order(
    redis: aioredis.Redis, make_settings: Callable[..., Settings], outcome: Outcome
) -> None:
    builds = BuildStore(redis)
    in_order, overtaken = await dispatched_build(redis), await dispatched_build(redis)
    progress, result = await builder_events(make_settings(), in_order, outcome)

    for event in progress:
        await builds.apply_status(event)
    await builds.apply_completion(result.completion)
    await builds.apply_status(result.status)

    # The same events of the other build, the completion first: none is refused.
    def moved(event: BuildStatusChanged) -> BuildStatusChanged:
        return event.model_copy(update={"build_id": overtaken.id})

    await builds.apply_completion(result.completion.model_copy(update={"build_id": overtaken.id}))
    for event in progress:
        await builds.apply_status(moved(event))
    await builds.apply_status(moved(result.status))

    expected = shown(await builds.get(in_order.id))
    assert shown(await builds.get(overtaken.id)) == expected
    assert [(s["name"], s["state"]) for s in expected["steps"]] == (  # type: ignore[attr-defined]
        [(step, "succeeded") for step in STEPS]
        if outcome.state == BuildState.SUCCEEDED
        else [("checkout", "succeeded"), ("install", "succeeded"), ("build", "failed")]
    )
    assert expected["step"] == (None if outcome.state == BuildState.SUCCEEDED else "build")


async def test_progress_events_seen_again_change_nothing(
    redis: aioredis.Redis, make_settings: Callable[..., Settings]
) -> None:
    builds = BuildStore(redis)
    build = await dispatched_build(redis)
    progress, result = await builder_events(make_settings(), build, SUCCEEDED)
    for event in progress:
        await builds.apply_status(event)
    before = shown(await builds.get(build.id))

    # A consumer that restarts reads again from its last committed offset.
    for event in progress[1:3]:
        assert await builds.apply_status(event) is None
    assert shown(await builds.get(build.id)) == before
    await builds.apply_completion(result.completion)
    for event in progress:
        await builds.apply_status(event)
    after = await builds.get(build.id)
    assert after is not None and after.state == BuildState.SUCCEEDED
    assert [s.name for s in after.steps] == list(STEPS)


async def test_the_records_consumer_applies_a_completion_delivered_first_without_warning(
    make_settings: Callable[..., Settings],
    redis_url: str,
    kafka_bootstrap: str,
    redis: aioredis.Redis,
    producer: EventProducer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings = make_settings(redis_url=redis_url, kafka_bootstrap=kafka_bootstrap)
    await wait_for_topics(settings)
    builds = BuildStore(redis)
    dispatcher = Dispatcher(settings, builds, ProjectStore(redis), producer)
    build = await dispatched_build(redis)
    progress, result = await builder_events(settings, build, SUCCEEDED)
    joined = asyncio.Event()
    consumer = asyncio.create_task(
        consume_forever(
            settings,
            [TOPIC_BUILD_STATUS, TOPIC_BUILD_COMPLETIONS],
            dispatcher.handle_record,
            group_id=f"test-records-{build.id}",
            client_id="test-records",
            joined=joined,
        )
    )
    caplog.set_level(logging.WARNING, logger="gobuild.platform.orchestrator")
    try:
        await asyncio.wait_for(joined.wait(), 60)
        # The broker hands the consumer the completion before the build's progress events.
        await producer.publish(TOPIC_BUILD_COMPLETIONS, result.completion)

        async def succeeded() -> bool:
            found = await builds.get(build.id)
            return found is not None and found.state == BuildState.SUCCEEDED

        await wait_until(succeeded, timeout=30, message="the completion was never applied")
        for event in progress:
            await producer.publish(TOPIC_BUILD_STATUS, event)
        await producer.publish(TOPIC_BUILD_STATUS, result.status)

        async def steps_known() -> bool:
            found = await builds.get(build.id)
            return found is not None and len(found.steps) == len(STEPS)

        await wait_until(steps_known, timeout=30, message="the progress events were not applied")
        await asyncio.sleep(0.5)  # the terminal status too
    finally:
        consumer.cancel()
        await asyncio.gather(consumer, return_exceptions=True)

    final = await builds.get(build.id)
    assert final is not None
    assert final.state == BuildState.SUCCEEDED
    assert final.deployment_url == "http://site-abc.localhost:8080/"
    assert final.started_at == progress[0].occurred_at
    assert [(s.name, s.state) for s in final.steps] == [(step, "succeeded") for step in STEPS]
    assert final.steps[-1].finished_at == final.finished_at
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert not [w for w in warnings if build.id in w], warnings
