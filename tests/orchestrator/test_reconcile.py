"""The reconcile of leases and unfinished builds on a real broker and Redis: no build stays
unfinished after its builder, its job or its result was lost, and none is sent again while it
is held."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import timedelta
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
    BuildCompleted,
    BuildRequested,
    BuildStatusChanged,
    BuildTriggered,
    utcnow,
)
from gobuild.platform.orchestrator.app import JOIN_TIMEOUT_SECONDS, create_app
from gobuild.platform.orchestrator.dispatch import Dispatcher
from gobuild.platform.orchestrator.reconcile import Reconciler
from gobuild.platform.orchestrator.scheduler import Scheduler
from gobuild.platform.records import Build, Project, new_id
from gobuild.platform.stores.build_queue import Assignment, BuildQueue
from gobuild.platform.stores.builds import BuildStore
from gobuild.platform.stores.claims import BuildClaims, BuilderFleet
from gobuild.platform.stores.keys import (
    KEY_ACTIVE_BUILDS,
    KEY_BUILD_ASSIGNMENTS,
    key_build_claim,
    key_builder_assigned,
)
from gobuild.platform.stores.outbox import PendingResult, ResultOutbox
from gobuild.platform.stores.projects import ProjectStore
from tests.conftest import wait_until
from tests.kafka_reading import read_events

GRACE = 30.0
CLAIM_TIMEOUT = 10.0


@pytest.fixture
async def settings(
    make_settings: Callable[..., Settings], redis_url: str, kafka_bootstrap: str
) -> Settings:
    settings = make_settings(
        redis_url=redis_url,
        kafka_bootstrap=kafka_bootstrap,
        reconcile_grace_seconds=GRACE,
        dispatch_claim_timeout_seconds=CLAIM_TIMEOUT,
        build_max_attempts=2,
        build_timeout_seconds=600,
    )
    await wait_for_topics(settings)
    return settings


@pytest.fixture
async def project(redis: aioredis.Redis) -> Project:
    project = Project(
        id=new_id("p_"), name="site", repo_url="/srv/site.git", provider="git", webhook_secret="x"
    )
    assert await ProjectStore(redis).create(project)
    return project


@pytest.fixture
def reconciler(settings: Settings, redis: aioredis.Redis, producer: EventProducer) -> Reconciler:
    dispatcher = Dispatcher(settings, BuildStore(redis), ProjectStore(redis), producer)
    return Reconciler(dispatcher, BuilderFleet(redis), ResultOutbox(redis))


async def dispatched_build(redis: aioredis.Redis, project: Project) -> Build:
    """A build the orchestrator dispatched (its request itself is not published)."""
    build = Build(
        id=new_id("b_"),
        project_id=project.id,
        source="api",
        repo_url=project.repo_url,
        ref="refs/heads/main",
        branch="main",
        production=True,
    )
    trigger = BuildTriggered(
        build_id=build.id,
        project_id=project.id,
        source="api",
        repo_url=project.repo_url,
        ref=build.ref,
        branch="main",
        commit_sha=None,
    )
    builds = BuildStore(redis)
    await builds.record_trigger(build, trigger)
    await builds.forget_trigger(build.id)
    event = BuildStatusChanged(
        build_id=build.id, project_id=project.id, state=BuildState.DISPATCHED, number=1
    )
    dispatched = await builds.apply_status(event)
    assert dispatched is not None
    return dispatched


async def run_on(redis: aioredis.Redis, build: Build, builder_id: str, ago: float = 0.0) -> Build:
    """The record of a build that `builder_id` started `ago` seconds ago."""
    event = BuildStatusChanged(
        build_id=build.id,
        project_id=build.project_id,
        state=BuildState.RUNNING,
        builder_id=builder_id,
        attempt=1,
        occurred_at=utcnow() - timedelta(seconds=ago),
    )
    running = await BuildStore(redis).apply_status(event)
    assert running is not None
    return running


async def assigned(
    redis: aioredis.Redis, build: Build, builder_id: str, *, ago: float = 0.0, attempt: int = 1
) -> None:
    """The scheduler gave the build to `builder_id` `ago` seconds ago."""
    assignment = Assignment(
        build_id=build.id, builder_id=builder_id, attempt=attempt, assigned_at=time.time() - ago
    )
    await redis.hset(KEY_BUILD_ASSIGNMENTS, build.id, assignment.model_dump_json())
    await redis.sadd(key_builder_assigned(builder_id), build.id)


async def unattended_for(redis: aioredis.Redis, build: Build, seconds: float) -> None:
    """Nothing happened to the build, and nobody was seen holding it, for `seconds`."""
    await redis.zadd(KEY_ACTIVE_BUILDS, {build.id: time.time() - seconds}, xx=True)


async def builder_alive(
    redis: aioredis.Redis, builder_id: str, running: list[str], capacity: int = 1
) -> BuildClaims:
    claims = BuildClaims(redis, builder_id)
    await claims.beat({"id": builder_id, "running": running, "capacity": capacity})
    return claims


async def requests_for(settings: Settings, build_id: str, expected: int) -> list[Any]:
    events = await read_events(settings, [TOPIC_BUILD_REQUESTS], expected, wait=3.0)
    return [e for e in events if isinstance(e, BuildRequested) and e.build_id == build_id]


async def attended_at(redis: aioredis.Redis, build_id: str) -> float | None:
    return await redis.zscore(KEY_ACTIVE_BUILDS, build_id)


async def test_the_index_of_unfinished_builds_follows_the_state_machine(
    redis: aioredis.Redis, project: Project
) -> None:
    build = await dispatched_build(redis, project)
    assert [build_id for build_id, _ in await BuildStore(redis).active()] == [build.id]
    await run_on(redis, build, "b1")
    assert await attended_at(redis, build.id) is not None
    await BuildStore(redis).apply_status(
        BuildStatusChanged(
            build_id=build.id, project_id=project.id, state=BuildState.FAILED, builder_id="b1"
        )
    )
    assert await BuildStore(redis).active() == []


async def test_an_assigned_build_whose_job_was_lost_is_sent_again_to_its_builder(
    settings: Settings, redis: aioredis.Redis, project: Project, reconciler: Reconciler
) -> None:
    build = await dispatched_build(redis, project)
    await builder_alive(redis, "idle-builder", running=[])
    await assigned(redis, build, "idle-builder", ago=CLAIM_TIMEOUT + 1)

    await reconciler.reconcile()

    [request] = await requests_for(settings, build.id, 1)
    assert (request.number, request.production) == (1, True)
    assert (request.builder_id, request.attempt) == ("idle-builder", 1)
    assert time.time() - (await attended_at(redis, build.id) or 0) < 5
    after = await BuildStore(redis).get(build.id)
    assert after is not None and after.state == BuildState.DISPATCHED


async def test_a_build_within_its_claim_timeout_or_held_by_a_live_builder_is_not_sent_again(
    settings: Settings, redis: aioredis.Redis, project: Project, reconciler: Reconciler
) -> None:
    recent = await dispatched_build(redis, project)
    held = await dispatched_build(redis, project)
    claims = await builder_alive(redis, "busy-builder", running=[held.id], capacity=2)
    await assigned(redis, recent, "busy-builder", ago=CLAIM_TIMEOUT - 3)
    await assigned(redis, held, "busy-builder", ago=CLAIM_TIMEOUT + 1)
    await unattended_for(redis, held, GRACE + 1)
    assert await claims.claim(held.id)

    await reconciler.reconcile()

    assert await requests_for(settings, recent.id, 0) == []
    assert await requests_for(settings, held.id, 0) == []
    assert time.time() - (await attended_at(redis, held.id) or 0) < 5


async def test_a_build_of_a_lost_builder_waits_in_the_queue_while_no_builder_has_a_free_slot(
    settings: Settings, redis: aioredis.Redis, project: Project, reconciler: Reconciler
) -> None:
    build = await dispatched_build(redis, project)
    await assigned(redis, build, "dead-builder")
    other = await dispatched_build(redis, project)
    await builder_alive(redis, "full-builder", running=[other.id], capacity=1)
    await assigned(redis, other, "full-builder")

    await reconciler.reconcile()
    await Scheduler(reconciler.dispatcher, BuilderFleet(redis)).run_round()

    assert await requests_for(settings, build.id, 0) == []
    [entry] = await BuildQueue(redis).entries()
    assert (entry.build_id, entry.reason) == (build.id, "no_free_slot")
    current = await BuildStore(redis).get(build.id)
    assert current is not None and current.state == BuildState.DISPATCHED


async def test_a_running_build_whose_builder_died_runs_again_on_a_live_builder(
    settings: Settings, redis: aioredis.Redis, project: Project, reconciler: Reconciler
) -> None:
    build = await run_on(redis, await dispatched_build(redis, project), "dead-builder", ago=60)
    await assigned(redis, build, "dead-builder")
    # The dead builder's claim is still there; its heartbeat is not.
    await redis.set(key_build_claim(build.id), "dead-builder", ex=30)
    await builder_alive(redis, "live-builder", running=[])

    await reconciler.reconcile()
    await Scheduler(reconciler.dispatcher, BuilderFleet(redis)).run_round()

    [request] = await requests_for(settings, build.id, 1)
    assert (request.builder_id, request.attempt) == ("live-builder", 2)
    again = await BuildStore(redis).get(build.id)
    assert again is not None and (again.state, again.attempt) == (BuildState.RUNNING, 2)
    # The live builder takes the dead one's claim over.
    assert await BuildClaims(redis, "live-builder").claim(build.id)


async def test_a_build_whose_builder_was_lost_more_often_than_its_attempts_allow_fails(
    settings: Settings, redis: aioredis.Redis, project: Project, reconciler: Reconciler
) -> None:
    build = await dispatched_build(redis, project)
    await assigned(redis, build, "dead-builder", attempt=2)  # the last of 2 attempts

    await reconciler.reconcile()

    failed = await BuildStore(redis).get(build.id)
    assert failed is not None and failed.state == BuildState.FAILED
    assert failed.reason == "its builder was lost 2 times"
    assert await requests_for(settings, build.id, 0) == []
    completions = await read_events(settings, [TOPIC_BUILD_COMPLETIONS], 1)
    assert [(c.build_id, c.state) for c in completions] == [(build.id, BuildState.FAILED)]
    assert await BuildStore(redis).active() == []
    assert await BuildQueue(redis).assignments() == []


async def test_an_assignment_of_an_ended_build_is_let_go(
    redis: aioredis.Redis, project: Project, reconciler: Reconciler
) -> None:
    build = await dispatched_build(redis, project)
    await assigned(redis, build, "some-builder")
    await BuildStore(redis).apply_status(
        BuildStatusChanged(build_id=build.id, project_id=project.id, state=BuildState.CANCELLED)
    )

    await reconciler.check_leases()

    assert await BuildQueue(redis).assigned_to("some-builder") == set()


async def test_a_dispatched_build_nobody_looks_after_is_queued_again_after_the_grace(
    settings: Settings, redis: aioredis.Redis, project: Project, reconciler: Reconciler
) -> None:
    # Dispatched by an orchestrator before the scheduler: no assignment, no queue entry.
    build = await dispatched_build(redis, project)
    await builder_alive(redis, "idle-builder", running=[])
    await unattended_for(redis, build, GRACE + 1)

    await reconciler.reconcile()
    await Scheduler(reconciler.dispatcher, BuilderFleet(redis)).run_round()

    [request] = await requests_for(settings, build.id, 1)
    assert (request.builder_id, request.attempt) == ("idle-builder", 1)


async def test_a_running_build_past_its_time_limit_and_grace_times_out(
    settings: Settings,
    redis: aioredis.Redis,
    project: Project,
    producer: EventProducer,
) -> None:
    short = settings.model_copy(update={"build_timeout_seconds": 60})
    dispatcher = Dispatcher(short, BuildStore(redis), ProjectStore(redis), producer)
    reconciler = Reconciler(dispatcher, BuilderFleet(redis), ResultOutbox(redis))
    build = await run_on(redis, await dispatched_build(redis, project), "hung-builder", ago=100)
    claims = await builder_alive(redis, "hung-builder", running=[build.id])
    assert await claims.claim(build.id)

    await reconciler.reconcile()

    ended = await BuildStore(redis).get(build.id)
    assert ended is not None and ended.state == BuildState.TIMED_OUT
    assert ended.reason == "no result within the time limit of 60 s and 30 s of grace"
    # The builder still at it is told to stop.
    assert await BuildStore(redis).cancel_requested(build.id)


async def test_a_projects_own_lower_time_limit_applies_to_its_running_builds(
    settings: Settings, redis: aioredis.Redis, reconciler: Reconciler
) -> None:
    project = Project(
        id=new_id("p_"),
        name="quick",
        repo_url="/srv/quick.git",
        provider="git",
        webhook_secret="x",
        build_timeout_seconds=20,
    )
    assert await ProjectStore(redis).create(project)
    build = await run_on(redis, await dispatched_build(redis, project), "hung-builder", ago=60)
    claims = await builder_alive(redis, "hung-builder", running=[build.id])
    assert await claims.claim(build.id)
    await assigned(redis, build, "hung-builder")

    await reconciler.reconcile()

    ended = await BuildStore(redis).get(build.id)
    assert ended is not None and ended.state == BuildState.TIMED_OUT
    assert ended.reason == "no result within the time limit of 20 s and 30 s of grace"
    assert await BuildQueue(redis).assignments() == []


async def result_of(build: Build, state: BuildState = BuildState.SUCCEEDED) -> PendingResult:
    completion = BuildCompleted(
        build_id=build.id,
        project_id=build.project_id,
        state=state,
        duration_seconds=12.5,
        deployment_id="site-abc",
        deployment_url="http://site-abc.localhost:8080/",
        builder_id="gone-builder",
    )
    status = BuildStatusChanged(
        build_id=build.id, project_id=build.project_id, state=state, builder_id="gone-builder"
    )
    return PendingResult(
        completion=completion, status=status, written_at=utcnow() - timedelta(seconds=GRACE + 1)
    )


async def test_a_builders_result_is_applied_though_its_running_status_was_lost(
    redis: aioredis.Redis, project: Project, reconciler: Reconciler
) -> None:
    build = await dispatched_build(redis, project)
    result = await result_of(build)

    await reconciler.dispatcher.handle_record(result.completion)
    await reconciler.dispatcher.handle_record(result.status)

    done = await BuildStore(redis).get(build.id)
    assert done is not None and done.state == BuildState.SUCCEEDED
    assert result.settled_by(done)


async def test_a_build_whose_result_waits_in_the_outbox_is_not_requested_again(
    settings: Settings, redis: aioredis.Redis, project: Project, reconciler: Reconciler
) -> None:
    build = await run_on(redis, await dispatched_build(redis, project), "b1", ago=60)
    await assigned(redis, build, "b1")  # b1 is gone
    await ResultOutbox(redis).put(await result_of(build))
    await builder_alive(redis, "idle-builder", running=[])  # it delivers the result
    await unattended_for(redis, build, GRACE + 1)

    await reconciler.reconcile()

    assert await requests_for(settings, build.id, 0) == []
    assert await ResultOutbox(redis).holds(build.id)
    assert not await BuildQueue(redis).is_queued(build.id)


async def test_a_result_no_live_builder_can_deliver_is_applied_by_the_orchestrator(
    settings: Settings, redis: aioredis.Redis, project: Project, reconciler: Reconciler
) -> None:
    # The builder's `running` was lost with the broker: the record still says dispatched.
    build = await dispatched_build(redis, project)
    await ResultOutbox(redis).put(await result_of(build))

    await reconciler.reconcile()

    done = await BuildStore(redis).get(build.id)
    assert done is not None and done.state == BuildState.SUCCEEDED
    assert done.deployment_url == "http://site-abc.localhost:8080/"
    assert not await ResultOutbox(redis).holds(build.id)
    completions = await read_events(settings, [TOPIC_BUILD_COMPLETIONS], 1)
    assert [c.build_id for c in completions] == [build.id]


@pytest.mark.timeout(JOIN_TIMEOUT_SECONDS + 90)
async def test_the_orchestrator_sends_a_lost_build_to_a_live_builder_on_its_own(
    make_settings: Callable[..., Settings],
    redis_url: str,
    fresh_kafka_bootstrap: str,
    redis: aioredis.Redis,
    project: Project,
) -> None:
    settings = make_settings(
        redis_url=redis_url,
        kafka_bootstrap=fresh_kafka_bootstrap,
        reconcile_interval_seconds=0.5,
        reconcile_grace_seconds=1.0,
    )
    # Dispatched before the broker lost its data: the job is gone, nobody holds the build.
    build = await dispatched_build(redis, project)
    claims = await builder_alive(redis, "idle-builder", running=[])

    # On a broker of its own (see test_orchestrator.running).
    await wait_for_topics(settings)
    startup = JOIN_TIMEOUT_SECONDS + 10
    async with QuartTestApp(create_app(settings), startup_timeout=startup, shutdown_timeout=60):

        async def requested() -> list[Any]:
            await claims.beat({"id": "idle-builder", "running": [], "capacity": 1})
            return await requests_for(settings, build.id, 1)

        [request] = await wait_until(requested, timeout=20, message="never requested again")
    assert (request.build_id, request.builder_id) == (build.id, "idle-builder")
