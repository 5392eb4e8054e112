"""The orchestrator on a real broker and Redis: triggers become numbered build jobs, once,
each for a builder with a free slot (builders are simulated by their heartbeats)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import redis.asyncio as aioredis
from quart.testing.app import TestApp as QuartTestApp

from gobuild.platform.build_state import BuildState
from gobuild.platform.bus import EventProducer, wait_for_topics
from gobuild.platform.config import Settings
from gobuild.platform.events import (
    TOPIC_BUILD_COMPLETIONS,
    TOPIC_BUILD_REQUESTS,
    TOPIC_BUILD_STATUS,
    TOPIC_BUILD_TRIGGERS,
    ArtifactRef,
    BuildCompleted,
    BuildRequested,
    BuildStatusChanged,
    BuildTriggered,
)
from gobuild.platform.orchestrator.app import JOIN_TIMEOUT_SECONDS, create_app
from gobuild.platform.records import Build, Project, new_id
from gobuild.platform.stores.build_queue import BuildQueue
from gobuild.platform.stores.builds import BuildStore
from gobuild.platform.stores.projects import ProjectStore
from tests.conftest import wait_until
from tests.kafka_reading import read_events
from tests.orchestrator.scheduling import builder_alive

# Room for the app's own limit for joining its groups (see `running`).
pytestmark = pytest.mark.timeout(JOIN_TIMEOUT_SECONDS + 90)


def running(settings: Settings) -> QuartTestApp:
    """The orchestrator app with its consumers started (joining groups takes a few seconds).
    Its start may take as long as the app's own limit for joining, and then fails by itself."""
    startup = JOIN_TIMEOUT_SECONDS + 10
    return QuartTestApp(create_app(settings), startup_timeout=startup, shutdown_timeout=60)


@pytest.fixture
async def settings(
    make_settings: Callable[..., Settings], redis_url: str, fresh_kafka_bootstrap: str
) -> Settings:
    """On a broker of the test's own: the orchestrator's groups hold no members that an earlier
    test's orchestrator left behind (a join waits until such members expired)."""
    settings = make_settings(redis_url=redis_url, kafka_bootstrap=fresh_kafka_bootstrap)
    await wait_for_topics(settings)
    return settings


@pytest.fixture
async def producer(settings: Settings) -> AsyncIterator[EventProducer]:
    """Publishes to the test's own broker."""
    producer = EventProducer(settings, client_id="test")
    await producer.start()
    yield producer
    await producer.stop()


@pytest.fixture
async def project(redis: aioredis.Redis) -> Project:
    project = Project(
        id=new_id("p_"),
        name="site",
        repo_url="/srv/site.git",
        provider="git",
        webhook_secret="x" * 20,
    )
    assert await ProjectStore(redis).create(project)
    return project


async def record(redis: aioredis.Redis, project: Project, branch: str = "main") -> BuildTriggered:
    build = Build(
        id=new_id("b_"),
        project_id=project.id,
        source="api",
        repo_url=project.repo_url,
        ref=f"refs/heads/{branch}",
        branch=branch,
        production=branch == "main",
    )
    trigger = BuildTriggered(
        build_id=build.id,
        project_id=project.id,
        source="api",
        repo_url=project.repo_url,
        ref=build.ref,
        branch=branch,
        commit_sha=None,
    )
    await BuildStore(redis).record_trigger(build, trigger)
    return trigger


async def read_topic(settings: Settings, topic: str, expected: int, wait: float = 5.0) -> list[Any]:
    return await read_events(settings, [topic], expected, wait)


async def wait_for_state(store: BuildStore, build_id: str, state: BuildState) -> Build:
    async def reached() -> Build | None:
        build = await store.get(build_id)
        return build if build and build.state == state else None

    return await wait_until(reached, timeout=5, message=f"build {build_id} never reached {state}")


async def test_a_trigger_becomes_one_numbered_build_request(
    settings: Settings, redis: aioredis.Redis, producer: EventProducer, project: Project
) -> None:
    first = await record(redis, project)
    second = await record(redis, project, branch="feature")
    async with running(settings):
        # Beats after the start (which can take longer than a heartbeat lives).
        await builder_alive(redis, "builder-1", capacity=2)
        await producer.publish(TOPIC_BUILD_TRIGGERS, first)
        await producer.publish(TOPIC_BUILD_TRIGGERS, second)
        await producer.publish(TOPIC_BUILD_TRIGGERS, first)  # a redelivery
        store = BuildStore(redis)
        one = await wait_for_state(store, first.build_id, BuildState.DISPATCHED)
        two = await wait_for_state(store, second.build_id, BuildState.DISPATCHED)
        requests: list[BuildRequested] = await read_topic(settings, TOPIC_BUILD_REQUESTS, 2)

    assert (one.number, two.number) == (1, 2)
    # Different builds sit on different partitions: order by number.
    requests.sort(key=lambda r: r.number)
    assert [(r.build_id, r.number, r.production, r.builder_id, r.attempt) for r in requests] == [
        (first.build_id, 1, True, "builder-1", 1),
        (second.build_id, 2, False, "builder-1", 1),
    ]
    assert requests[0].config.image == settings.build_image
    assert requests[0].config.timeout_seconds == settings.build_timeout_seconds
    assert await store.pending_triggers() == []


async def test_a_recorded_trigger_that_never_reached_kafka_is_dispatched_at_start(
    settings: Settings, redis: aioredis.Redis, project: Project
) -> None:
    trigger = await record(redis, project)  # recorded, never published: the broker was down
    async with running(settings):
        await builder_alive(redis, "builder-1")
        build = await wait_for_state(BuildStore(redis), trigger.build_id, BuildState.DISPATCHED)
        requests = await read_topic(settings, TOPIC_BUILD_REQUESTS, 1)
    assert build.number == 1
    assert [r.build_id for r in requests] == [trigger.build_id]


async def test_a_build_cancelled_before_dispatch_is_never_requested(
    settings: Settings, redis: aioredis.Redis, producer: EventProducer, project: Project
) -> None:
    trigger = await record(redis, project)
    await BuildStore(redis).request_cancel(trigger.build_id)
    async with running(settings):
        await producer.publish(TOPIC_BUILD_TRIGGERS, trigger)
        build = await wait_for_state(BuildStore(redis), trigger.build_id, BuildState.CANCELLED)
        completions = await read_topic(settings, TOPIC_BUILD_COMPLETIONS, 1)
        requests = await read_topic(settings, TOPIC_BUILD_REQUESTS, 0, wait=0.5)
    assert build.reason == "cancelled before it started"
    assert [c.state for c in completions] == [BuildState.CANCELLED]
    assert requests == []


async def test_status_and_completion_events_keep_the_record_current(
    settings: Settings, redis: aioredis.Redis, producer: EventProducer, project: Project
) -> None:
    trigger = await record(redis, project)
    store = BuildStore(redis)
    async with running(settings):
        await builder_alive(redis, "agent-1")
        await producer.publish(TOPIC_BUILD_TRIGGERS, trigger)
        await wait_for_state(store, trigger.build_id, BuildState.DISPATCHED)
        base = {"build_id": trigger.build_id, "project_id": project.id, "builder_id": "agent-1"}
        await producer.publish(
            TOPIC_BUILD_STATUS, BuildStatusChanged(**base, state=BuildState.RUNNING, attempt=1)
        )
        await producer.publish(
            TOPIC_BUILD_STATUS, BuildStatusChanged(**base, state=BuildState.RUNNING, step="build")
        )
        running_build = await wait_for_state(store, trigger.build_id, BuildState.RUNNING)
        await producer.publish(
            TOPIC_BUILD_COMPLETIONS,
            BuildCompleted(
                **base,
                state=BuildState.SUCCEEDED,
                duration_seconds=1.5,
                commit_sha="c" * 40,
                artifact=ArtifactRef(name="a.tar.gz", sha256="f" * 64, size=10),
                deployment_id="site-abc",
                deployment_url="http://site-abc.localhost:8080/",
            ),
        )
        await producer.publish(
            TOPIC_BUILD_STATUS, BuildStatusChanged(**base, state=BuildState.SUCCEEDED)
        )
        # An illegal move after the end is ignored, not applied.
        await producer.publish(
            TOPIC_BUILD_STATUS, BuildStatusChanged(**base, state=BuildState.QUEUED)
        )
        # Events without a builder are the orchestrator's own, applied before it published them.
        await producer.publish(
            TOPIC_BUILD_STATUS,
            BuildStatusChanged(
                build_id=trigger.build_id, project_id=project.id, state=BuildState.FAILED
            ),
        )
        await wait_for_state(store, trigger.build_id, BuildState.SUCCEEDED)
        await wait_until(
            lambda: _deployment_url(store, trigger.build_id),
            timeout=2,
            message="the completion never set the deployment URL",
        )
        # The illegal moves must stay ignored: give them time to be (not) applied.
        await asyncio.sleep(0.3)
        final = await store.get(trigger.build_id)
        # The build ended: its builder's slot is free again.
        assert await BuildQueue(redis).assignments() == []
    assert (running_build.builder_id, running_build.attempt) == ("agent-1", 1)
    assert final is not None
    assert final.state == BuildState.SUCCEEDED
    assert final.deployment_url == "http://site-abc.localhost:8080/"
    assert final.artifact is not None and final.artifact.sha256 == "f" * 64
    assert final.commit_sha == "c" * 40
    assert final.started_at is not None and final.finished_at is not None


async def _deployment_url(store: BuildStore, build_id: str) -> str | None:
    build = await store.get(build_id)
    return build.deployment_url if build else None


async def test_a_build_waits_queued_until_a_builder_appears_then_starts_within_a_round(
    settings: Settings, redis: aioredis.Redis, producer: EventProducer, project: Project
) -> None:
    trigger = await record(redis, project)
    store = BuildStore(redis)
    async with running(settings):
        await producer.publish(TOPIC_BUILD_TRIGGERS, trigger)

        async def placed() -> bool:
            return [e.build_id for e in await BuildQueue(redis).entries()] == [trigger.build_id]

        await wait_until(placed, timeout=10, message="the build never showed in the queue")
        queued = await store.get(trigger.build_id)
        assert queued is not None and (queued.state, queued.number) == (BuildState.QUEUED, 1)

        await builder_alive(redis, "late-builder")
        await wait_for_state(store, trigger.build_id, BuildState.DISPATCHED)
        [request] = await read_topic(settings, TOPIC_BUILD_REQUESTS, 1)
    assert (request.build_id, request.builder_id) == (trigger.build_id, "late-builder")
