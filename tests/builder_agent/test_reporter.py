"""A build's progress events (its steps, its deployment's states) reach the broker in the order
they were told, and the build does not wait for the broker to take each one."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from gobuild.builder_agent.reporter import BuildReporter
from gobuild.platform.build_state import BuildState
from gobuild.platform.bus import EventProducer, wait_for_topics
from gobuild.platform.config import Settings
from gobuild.platform.devstack import free_port, start_broker
from gobuild.platform.events import (
    TOPIC_BUILD_STATUS,
    TOPIC_DEPLOYMENT_STATUS,
    BuildStatusChanged,
    DeploymentStatusChanged,
)
from gobuild.platform.records import Build, Deployment
from tests.kafka_reading import read_events
from tests.orchestrator.builder_runs import api_build, builder_run

STEPS = ["checkout", "install", "build", "upload", "deploy"]


def deployment_of(build: Build) -> Deployment:
    return Deployment(
        id="site-abc", project_id=build.project_id, build_id=build.id, number=1, url="http://x/"
    )


async def test_progress_events_reach_the_broker_in_the_order_told(
    make_settings: Callable[..., Settings], kafka_bootstrap: str, producer: EventProducer
) -> None:
    settings = make_settings(kafka_bootstrap=kafka_bootstrap)
    build = api_build(number=1)
    run = builder_run(settings, build, producer)
    reporter = BuildReporter(producer, "builder-1")

    for step in STEPS:
        await reporter.status(run, BuildState.RUNNING, step=step)
    for state in ("created", "ready"):
        await reporter.deployment(deployment_of(build), state)
    await reporter.flush(build.id)

    statuses = await read_events(settings, [TOPIC_BUILD_STATUS], len(STEPS))
    mine = [e for e in statuses if isinstance(e, BuildStatusChanged) and e.build_id == build.id]
    assert [(e.step, e.seq) for e in mine] == [(step, n + 1) for n, step in enumerate(STEPS)]
    deployed = await read_events(settings, [TOPIC_DEPLOYMENT_STATUS], 2)
    assert [e.state for e in deployed if isinstance(e, DeploymentStatusChanged)] == [
        "created",
        "ready",
    ]


async def test_a_build_does_not_wait_for_a_broker_that_stopped_answering(
    make_settings: Callable[..., Settings],
) -> None:
    broker = start_broker(free_port())
    settings = make_settings(kafka_bootstrap=f"127.0.0.1:{broker.port}")
    producer = EventProducer(settings, client_id="builder-test")
    try:
        await wait_for_topics(settings)
        await producer.start()
        build = api_build(number=1)
        run = builder_run(settings, build, producer)
        reporter = BuildReporter(producer, "builder-1")
        await reporter.status(run, BuildState.RUNNING, step="checkout")
        await reporter.flush(build.id)
        broker.stop()

        # Each event would wait for the broker up to its publish timeout (10 s): the steps go
        # on at once, and the result's flush waits only as long as it is told.
        async with asyncio.timeout(5):
            for step in STEPS[1:]:
                await reporter.status(run, BuildState.RUNNING, step=step)
            await reporter.deployment(deployment_of(build), "created")
            await reporter.flush(build.id, timeout=0.5)
    finally:
        # Its unsent events would keep stopping busy until they time out: not this test's.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(producer.stop(), 1)
        broker.stop()
