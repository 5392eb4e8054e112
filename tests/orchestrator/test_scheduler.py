"""The scheduler on a real broker and Redis: the queue's order, what holds a build back, the
snapshot the API reads, leases of lost builders, and slots that are never overbooked.

Builders are simulated by their heartbeats: the scheduler knows a builder by nothing else."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest
import redis.asyncio as aioredis
from aiokafka.errors import KafkaConnectionError

from gobuild.platform.build_state import BuildState
from gobuild.platform.bus import EventProducer, wait_for_topics
from gobuild.platform.config import Settings
from gobuild.platform.events import (
    TOPIC_BUILD_REQUESTS,
    BuildCompleted,
    BuildRequested,
    BuildStatusChanged,
    Event,
)
from gobuild.platform.orchestrator.dispatch import Dispatcher
from gobuild.platform.orchestrator.reconcile import Reconciler
from gobuild.platform.orchestrator.scheduler import Scheduler
from gobuild.platform.records import Build, Project
from gobuild.platform.stores.build_queue import BuildQueue
from gobuild.platform.stores.builds import BuildStore
from gobuild.platform.stores.claims import BuilderFleet
from gobuild.platform.stores.keys import KEY_BUILD_ASSIGNMENTS
from gobuild.platform.stores.outbox import PendingResult, ResultOutbox
from gobuild.platform.stores.projects import ProjectStore
from tests.kafka_reading import read_events
from tests.orchestrator.scheduling import builder_alive, builder_gone, make_project, record

BOOST = 600.0


@pytest.fixture
async def settings(
    make_settings: Callable[..., Settings], redis_url: str, kafka_bootstrap: str
) -> Settings:
    settings = make_settings(
        redis_url=redis_url,
        kafka_bootstrap=kafka_bootstrap,
        queue_priority_boost_seconds=BOOST,
        queue_timeout_seconds=600,
        build_max_attempts=2,
        dispatch_claim_timeout_seconds=5,
    )
    await wait_for_topics(settings)
    return settings


@pytest.fixture
def dispatcher(settings: Settings, redis: aioredis.Redis, producer: EventProducer) -> Dispatcher:
    return Dispatcher(settings, BuildStore(redis), ProjectStore(redis), producer)


@pytest.fixture
def scheduler(dispatcher: Dispatcher, redis: aioredis.Redis) -> Scheduler:
    return Scheduler(dispatcher, BuilderFleet(redis))


@pytest.fixture
def reconciler(dispatcher: Dispatcher, redis: aioredis.Redis) -> Reconciler:
    return Reconciler(dispatcher, BuilderFleet(redis), ResultOutbox(redis))


@pytest.fixture
async def project(redis: aioredis.Redis) -> Project:
    return await make_project(redis)


async def triggered(dispatcher: Dispatcher, project: Project, **options: Any) -> str:
    """A build triggered and handled by the orchestrator (numbered and queued)."""
    trigger = await record(dispatcher.builds.redis, project, **options)
    await dispatcher.handle_trigger(trigger)
    return trigger.build_id


async def state_of(redis: aioredis.Redis, build_id: str) -> Build:
    build = await BuildStore(redis).get(build_id)
    assert build is not None
    return build


async def given_to(redis: aioredis.Redis) -> dict[str, str]:
    """build id -> the builder the scheduler gave it to."""
    return {a.build_id: a.builder_id for a in await BuildQueue(redis).assignments()}


async def waiting(redis: aioredis.Redis) -> list[tuple[str, int, str]]:
    """(build id, position, reason) of each waiting build, as the API reads them."""
    return [(e.build_id, e.position, e.reason) for e in await BuildQueue(redis).entries()]


async def requests(settings: Settings, expected: int) -> list[BuildRequested]:
    events: list[Event] = await read_events(settings, [TOPIC_BUILD_REQUESTS], expected, wait=5)
    return [e for e in events if isinstance(e, BuildRequested)]


async def test_a_triggered_build_waits_queued_until_a_builder_has_a_free_slot(
    settings: Settings, redis: aioredis.Redis, dispatcher: Dispatcher, scheduler: Scheduler
) -> None:
    project = await make_project(redis)
    build_id = await triggered(dispatcher, project)
    await scheduler.run_round()

    queued = await state_of(redis, build_id)
    assert (queued.state, queued.number) == (BuildState.QUEUED, 1)
    assert await waiting(redis) == [(build_id, 1, "no_free_slot")]
    assert await dispatcher.builds.pending_triggers() == []

    await builder_alive(redis, "b1")
    await scheduler.run_round()

    dispatched = await state_of(redis, build_id)
    assert (dispatched.state, dispatched.attempt) == (BuildState.DISPATCHED, 1)
    assert await given_to(redis) == {build_id: "b1"}
    assert await waiting(redis) == []
    [request] = await requests(settings, 1)
    assert (request.build_id, request.builder_id, request.attempt) == (build_id, "b1", 1)


async def test_production_builds_go_first_and_builds_of_one_priority_in_order(
    redis: aioredis.Redis, dispatcher: Dispatcher, scheduler: Scheduler, project: Project
) -> None:
    first_preview = await triggered(dispatcher, project, branch="a", ago=30)
    second_preview = await triggered(dispatcher, project, branch="b", ago=20)
    production = await triggered(dispatcher, project, branch="main", ago=10)
    await scheduler.run_round()  # no builder yet: the snapshot shows the order

    assert await waiting(redis) == [
        (production, 1, "no_free_slot"),
        (first_preview, 2, "no_free_slot"),
        (second_preview, 3, "no_free_slot"),
    ]
    entries = await BuildQueue(redis).entries()
    assert [e.priority for e in entries] == ["high", "normal", "normal"]
    assert all(e.estimated_start is None for e in entries)  # no builder could take them

    await builder_alive(redis, "b1")
    await scheduler.run_round()
    assert await given_to(redis) == {production: "b1"}
    [first, second] = await BuildQueue(redis).entries()
    assert (first.build_id, first.position, second.build_id) == (first_preview, 1, second_preview)
    # One slot, busy: the first waits about one build, the second longer.
    assert first.estimated_start is not None and second.estimated_start is not None
    assert first.estimated_start < second.estimated_start


async def test_a_preview_build_that_waited_longer_than_the_boost_goes_before_production(
    redis: aioredis.Redis, dispatcher: Dispatcher, scheduler: Scheduler, project: Project
) -> None:
    old_preview = await triggered(dispatcher, project, branch="old", ago=BOOST + 60)
    production = await triggered(dispatcher, project, branch="main")
    await builder_alive(redis, "b1")

    await scheduler.run_round()

    assert await given_to(redis) == {old_preview: "b1"}
    assert await waiting(redis) == [(production, 1, "no_free_slot")]


async def test_a_project_at_its_concurrency_limit_does_not_hold_back_other_projects(
    redis: aioredis.Redis, dispatcher: Dispatcher, scheduler: Scheduler
) -> None:
    limited = await make_project(redis, "limited", concurrency_limit=1)
    other = await make_project(redis, "other")
    first = await triggered(dispatcher, limited, branch="a", ago=30)
    second = await triggered(dispatcher, limited, branch="b", ago=20)
    unrelated = await triggered(dispatcher, other, branch="c", ago=10)
    await builder_alive(redis, "big", capacity=3)

    await scheduler.run_round()

    assert await given_to(redis) == {first: "big", unrelated: "big"}
    assert await waiting(redis) == [(second, 1, "project_concurrency_limit")]


async def test_a_build_waits_for_an_older_unfinished_build_of_a_project_it_depends_on(
    redis: aioredis.Redis, dispatcher: Dispatcher, scheduler: Scheduler
) -> None:
    library = await make_project(redis, "library")
    app = await make_project(redis, "app", depends_on=[library.id])
    library_build = await triggered(dispatcher, library, ago=30)
    app_build = await triggered(dispatcher, app, ago=20)
    later = await triggered(dispatcher, library, branch="feature", ago=10)
    await builder_alive(redis, "b1", capacity=2)

    await scheduler.run_round()

    # The app's build waits, and does not block the build queued after it.
    assert await given_to(redis) == {library_build: "b1", later: "b1"}
    assert await waiting(redis) == [(app_build, 1, "waiting_for_dependency")]


async def test_a_build_needing_labels_no_builder_has_waits_and_goes_to_one_that_has_them(
    redis: aioredis.Redis, dispatcher: Dispatcher, scheduler: Scheduler
) -> None:
    gpu = await make_project(redis, "gpu", required_labels=["gpu", "arch=amd64"])
    plain = await make_project(redis, "plain")
    gpu_build = await triggered(dispatcher, gpu, ago=20)
    plain_build = await triggered(dispatcher, plain, ago=10)
    await builder_alive(redis, "plain-builder", capacity=2, labels=["arch=amd64"])

    await scheduler.run_round()

    assert await given_to(redis) == {plain_build: "plain-builder"}
    [entry] = await BuildQueue(redis).entries()
    assert (entry.build_id, entry.reason, entry.estimated_start) == (
        gpu_build,
        "no_builder_with_labels",
        None,
    )
    assert entry.public()["reason_text"] == "no builder has the labels the project requires"

    await builder_alive(redis, "gpu-builder", labels=["arch=amd64", "gpu", "node"])
    await scheduler.run_round()
    assert (await given_to(redis))[gpu_build] == "gpu-builder"


async def test_the_builder_with_the_most_free_slots_gets_the_build(
    redis: aioredis.Redis, dispatcher: Dispatcher, scheduler: Scheduler, project: Project
) -> None:
    await builder_alive(redis, "small", capacity=1)
    await builder_alive(redis, "large", capacity=3)
    first = await triggered(dispatcher, project, branch="a", ago=30)
    await scheduler.run_round()
    assert await given_to(redis) == {first: "large"}


async def test_a_builder_with_a_warm_container_of_the_project_gets_its_build_first(
    redis: aioredis.Redis, dispatcher: Dispatcher, scheduler: Scheduler, project: Project
) -> None:
    other = await make_project(redis, "other")
    await builder_alive(redis, "large", capacity=3, warm=[other.id])
    await builder_alive(redis, "warm", capacity=2, warm=[project.id])
    builds = {await triggered(dispatcher, project, branch=b, ago=30) for b in ("a", "b")}

    await scheduler.run_round()

    # By free slots both would go to "large". One goes to the builder with the project's warm
    # container; that container is then promised, so the other goes by free slots again.
    given = await given_to(redis)
    assert set(given) == builds and sorted(given.values()) == ["large", "warm"]


async def test_a_build_waiting_longer_than_the_queue_timeout_ends_timed_out(
    redis: aioredis.Redis, dispatcher: Dispatcher, scheduler: Scheduler, project: Project
) -> None:
    build_id = await triggered(dispatcher, project)
    queue = BuildQueue(redis)
    [(_, score)] = await queue.ordered()
    await queue.requeue(build_id, score, attempt=1, queued_at=time.time() - 601)

    await scheduler.run_round()

    ended = await state_of(redis, build_id)
    assert (ended.state, ended.reason) == (
        BuildState.TIMED_OUT,
        "waited in the queue for more than 600 s",
    )
    assert await queue.ordered() == [] and await waiting(redis) == []


async def test_a_cancelled_queued_build_ends_and_leaves_the_queue(
    redis: aioredis.Redis, dispatcher: Dispatcher, scheduler: Scheduler, project: Project
) -> None:
    build_id = await triggered(dispatcher, project)
    kept = await triggered(dispatcher, project, branch="other")
    await dispatcher.builds.request_cancel(build_id)
    await builder_alive(redis, "b1")

    await scheduler.run_round()

    ended = await state_of(redis, build_id)
    assert (ended.state, ended.reason) == (BuildState.CANCELLED, "cancelled before it started")
    # The round reads every queued build's cancel flag at once: only this one's is set.
    assert await given_to(redis) == {kept: "b1"}
    assert build_id not in dict(await BuildQueue(redis).ordered())


async def test_a_builder_is_never_given_more_builds_than_its_slots(
    redis: aioredis.Redis, dispatcher: Dispatcher, project: Project
) -> None:
    builds = [await triggered(dispatcher, project, branch=f"b{i}", ago=50 - i) for i in range(6)]
    await builder_alive(redis, "b1", capacity=2)
    await builder_alive(redis, "b2", capacity=1)
    # Two schedulers racing (as after an orchestrator restart overlapping the old one).
    racing = [Scheduler(dispatcher, BuilderFleet(redis)) for _ in range(2)]

    await asyncio.gather(*(s.run_round() for s in racing for _ in range(3)))

    queue = BuildQueue(redis)
    assert len(await queue.assigned_to("b1")) == 2
    assert len(await queue.assigned_to("b2")) == 1
    # Racing rounds keep the slots' bound, not strict order: three builds given, three waiting
    # in their order, none lost or given twice.
    given = set(await given_to(redis))
    assert len(given) == 3 and given <= set(builds)
    await racing[0].run_round()  # a snapshot written after the race
    left = [b for b in builds if b not in given]
    assert await waiting(redis) == [(b, i + 1, "no_free_slot") for i, b in enumerate(left)]


async def test_assign_is_atomic_and_bounded_by_the_slots(redis: aioredis.Redis) -> None:
    queue = BuildQueue(redis)
    for i in range(10):
        await queue.enqueue(f"b_{i}", float(i))

    given = await asyncio.gather(*(queue.assign(f"b_{i}", "b1", 3, 1) for i in range(10)))

    assert sum(given) == 3
    assert len(await queue.assigned_to("b1")) == 3
    # A build given to a builder is not queued again by a repeated trigger.
    assert not await queue.enqueue("b_0", 0.0)


async def one_slot_taken_one_waiting(
    redis: aioredis.Redis, dispatcher: Dispatcher, scheduler: Scheduler
) -> tuple[Project, str, str]:
    """A builder with one slot runs the first of two builds of a project; the second waits."""
    project = await make_project(redis)
    first = await triggered(dispatcher, project, branch="a", ago=20)
    second = await triggered(dispatcher, project, branch="b", ago=10)
    await builder_alive(redis, "b1")
    await scheduler.run_round()
    assert await given_to(redis) == {first: "b1"}
    return project, first, second


async def test_a_completion_frees_the_slot_and_the_next_build_starts(
    settings: Settings, redis: aioredis.Redis, dispatcher: Dispatcher, scheduler: Scheduler
) -> None:
    project, first, second = await one_slot_taken_one_waiting(redis, dispatcher, scheduler)
    dispatcher.wakeup.clear()

    await dispatcher.handle_record(
        BuildCompleted(
            build_id=first,
            project_id=project.id,
            state=BuildState.FAILED,
            duration_seconds=4.0,
            error="step 'build' exited with code 1",
            builder_id="b1",
        )
    )

    assert dispatcher.wakeup.is_set()  # the scheduler runs a round at once
    await scheduler.run_round()
    assert await given_to(redis) == {second: "b1"}
    assert (await state_of(redis, first)).state == BuildState.FAILED


async def test_a_result_in_the_outbox_frees_the_slot_before_it_comes_through_the_broker(
    settings: Settings, redis: aioredis.Redis, dispatcher: Dispatcher, scheduler: Scheduler
) -> None:
    project, first, second = await one_slot_taken_one_waiting(redis, dispatcher, scheduler)
    listening = asyncio.create_task(scheduler.wake_on_results())
    try:
        await asyncio.sleep(0.2)  # subscribed
        dispatcher.wakeup.clear()
        ended = await state_of(redis, first)
        completion = BuildCompleted(
            build_id=first,
            project_id=project.id,
            state=BuildState.SUCCEEDED,
            duration_seconds=2.0,
            builder_id="b1",
        )
        status = BuildStatusChanged(
            build_id=first, project_id=project.id, state=BuildState.SUCCEEDED, builder_id="b1"
        )
        # The builder kept its result; the broker has not brought it to the orchestrator yet.
        await ResultOutbox(redis).put(PendingResult(completion=completion, status=status))
        await asyncio.wait_for(dispatcher.wakeup.wait(), 5)  # a round runs at once
    finally:
        listening.cancel()
    await scheduler.run_round()

    # The builder's one slot is free: the next build is given to it, and the first build stays
    # assigned (and its record as it was) until its result is applied.
    assert await given_to(redis) == {first: "b1", second: "b1"}
    assert (await state_of(redis, first)).state == ended.state
    queue = BuildQueue(redis)
    await queue.enqueue("b_third", 0.0)
    assert await queue.try_assign("b_third", "b1", 1, 1) == "full"  # still one slot only
    await dispatcher.handle_record(completion)
    assert await given_to(redis) == {second: "b1"}


async def test_a_broker_that_refuses_the_job_leaves_the_build_queued_in_its_place(
    settings: Settings, redis: aioredis.Redis, producer: EventProducer, project: Project
) -> None:
    class DownProducer(EventProducer):
        async def publish(self, topic: str, event: Event, timeout: float = 10.0) -> None:
            raise KafkaConnectionError("the broker is down")

    down = DownProducer(settings, client_id="down")  # never started: nothing reaches a broker
    dispatcher = Dispatcher(settings, BuildStore(redis), ProjectStore(redis), down)
    first = await triggered(dispatcher, project, branch="a", ago=20)
    second = await triggered(dispatcher, project, branch="b", ago=10)
    await builder_alive(redis, "b1", capacity=2)

    await Scheduler(dispatcher, BuilderFleet(redis)).run_round()

    assert await given_to(redis) == {}
    assert await waiting(redis) == [
        (first, 1, "broker_unavailable"),
        (second, 2, "broker_unavailable"),
    ]
    # Once the broker takes it, the build starts where it was.
    dispatcher.producer = producer
    await Scheduler(dispatcher, BuilderFleet(redis)).run_round()
    assert await given_to(redis) == {first: "b1", second: "b1"}


async def test_a_build_of_a_lost_builder_is_queued_again_at_the_front_then_fails_past_its_attempts(
    settings: Settings,
    redis: aioredis.Redis,
    dispatcher: Dispatcher,
    scheduler: Scheduler,
    reconciler: Reconciler,
    project: Project,
) -> None:
    lost = await triggered(dispatcher, project, branch="a", ago=30)
    newer = await triggered(dispatcher, project, branch="b", ago=10)
    await builder_alive(redis, "b1")
    await scheduler.run_round()
    assert await given_to(redis) == {lost: "b1"}

    await builder_gone(redis, "b1")
    await reconciler.check_leases()

    queue = BuildQueue(redis)
    assert [build_id for build_id, _ in await queue.ordered()] == [lost, newer]
    assert (await queue.tickets([lost]))[lost].attempt == 2
    await builder_alive(redis, "b2")
    await scheduler.run_round()
    assert await given_to(redis) == {lost: "b2"}
    again = await state_of(redis, lost)
    assert (again.state, again.attempt) == (BuildState.DISPATCHED, 2)
    sent = [r for r in await requests(settings, 2) if r.build_id == lost]
    assert [(r.builder_id, r.attempt) for r in sent] == [("b1", 1), ("b2", 2)]

    await builder_gone(redis, "b2")
    await reconciler.check_leases()

    failed = await state_of(redis, lost)
    assert (failed.state, failed.reason) == (BuildState.FAILED, "its builder was lost 2 times")
    assert await given_to(redis) == {}


async def test_a_job_its_builder_did_not_claim_in_time_is_sent_to_it_again(
    settings: Settings,
    redis: aioredis.Redis,
    dispatcher: Dispatcher,
    scheduler: Scheduler,
    reconciler: Reconciler,
    project: Project,
) -> None:
    build_id = await triggered(dispatcher, project)
    claims = await builder_alive(redis, "b1")
    await scheduler.run_round()
    queue = BuildQueue(redis)
    assignment = await queue.assignment(build_id)
    assert assignment is not None
    await reconciler.check_leases()  # within the claim timeout: nothing to do
    # The claim timeout passed without a claim (the job was lost with the broker).
    old = assignment.model_copy(update={"assigned_at": time.time() - 6})
    await redis.hset(KEY_BUILD_ASSIGNMENTS, build_id, old.model_dump_json())

    await reconciler.check_leases()
    await reconciler.check_leases()  # sent again once, not every round

    sent = [r for r in await requests(settings, 2) if r.build_id == build_id]
    assert [(r.builder_id, r.attempt) for r in sent] == [("b1", 1), ("b1", 1)]
    # Once claimed, it is left alone.
    assert await claims.claim(build_id)
    await redis.hset(KEY_BUILD_ASSIGNMENTS, build_id, old.model_dump_json())
    await reconciler.check_leases()
    assert len([r for r in await requests(settings, 2) if r.build_id == build_id]) == 2
