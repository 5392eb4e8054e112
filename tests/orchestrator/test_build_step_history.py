"""The build record keeps the steps of its latest attempt (state, start, end, duration), from
the builder's status events and its completion."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import redis.asyncio as aioredis

from gobuild.platform.build_state import BuildState
from gobuild.platform.events import BuildCompleted, BuildStatusChanged, BuildTriggered
from gobuild.platform.records import Build
from gobuild.platform.stores.builds import BuildStore

T0 = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def status(
    state: BuildState, step: str | None, seconds: float, attempt: int | None = 1
) -> BuildStatusChanged:
    return BuildStatusChanged(
        build_id="b_1",
        project_id="p_1",
        state=state,
        step=step,
        builder_id="agent-1" if attempt else None,
        attempt=attempt,
        occurred_at=at(seconds),
    )


def completion(state: BuildState, seconds: float) -> BuildCompleted:
    return BuildCompleted(
        build_id="b_1",
        project_id="p_1",
        state=state,
        duration_seconds=seconds,
        builder_id="agent-1",
        occurred_at=at(seconds),
    )


async def dispatched_build(redis: aioredis.Redis) -> BuildStore:
    store = BuildStore(redis)
    build = Build(
        id="b_1", project_id="p_1", source="api", repo_url="/srv/site.git", ref="refs/heads/main"
    )
    trigger = BuildTriggered(
        build_id="b_1",
        project_id="p_1",
        source="api",
        repo_url=build.repo_url,
        ref=build.ref,
        branch="main",
        commit_sha=None,
    )
    await store.record_trigger(build, trigger)
    await store.apply_status(status(BuildState.DISPATCHED, None, 0, attempt=None))
    return store


def history(build: Build | None) -> list[tuple[str, str, float | None]]:
    assert build is not None
    return [(s.name, s.state, s.duration_seconds) for s in build.steps]


async def test_status_events_record_every_step_with_its_duration(redis: aioredis.Redis) -> None:
    store = await dispatched_build(redis)
    for step, seconds in (
        ("checkout", 1),
        ("install", 3),
        ("build", 10),
        ("upload", 25),
        ("deploy", 27),
    ):
        await store.apply_status(status(BuildState.RUNNING, step, seconds))
    await store.apply_completion(completion(BuildState.SUCCEEDED, 30))
    await store.apply_status(status(BuildState.SUCCEEDED, None, 30))

    done = await store.get("b_1")
    assert history(done) == [
        ("checkout", "succeeded", 2.0),
        ("install", "succeeded", 7.0),
        ("build", "succeeded", 15.0),
        ("upload", "succeeded", 2.0),
        ("deploy", "succeeded", 3.0),
    ]
    assert done is not None
    assert done.steps[1].started_at == at(3) and done.steps[1].finished_at == at(10)


async def test_the_failing_step_is_marked_failed_whichever_event_comes_first(
    redis: aioredis.Redis,
) -> None:
    store = await dispatched_build(redis)
    await store.apply_status(status(BuildState.RUNNING, "checkout", 1))
    await store.apply_status(status(BuildState.RUNNING, "build", 4))
    # The builder publishes the completion before the terminal status.
    await store.apply_completion(completion(BuildState.FAILED, 9))
    await store.apply_status(status(BuildState.FAILED, "build", 9))
    assert history(await store.get("b_1")) == [
        ("checkout", "succeeded", 3.0),
        ("build", "failed", 5.0),
    ]


async def test_a_terminal_status_before_the_completion_ends_the_step(
    redis: aioredis.Redis,
) -> None:
    store = await dispatched_build(redis)
    await store.apply_status(status(BuildState.RUNNING, "build", 1))
    await store.apply_status(status(BuildState.TIMED_OUT, "build", 6))
    await store.apply_completion(completion(BuildState.TIMED_OUT, 8))
    assert history(await store.get("b_1")) == [("build", "timed_out", 5.0)]


async def test_repeated_events_do_not_duplicate_a_step(redis: aioredis.Redis) -> None:
    store = await dispatched_build(redis)
    await store.apply_status(status(BuildState.RUNNING, "checkout", 1))
    await store.apply_status(status(BuildState.RUNNING, "checkout", 1))
    await store.apply_status(status(BuildState.RUNNING, "install", 2))
    assert await store.apply_status(status(BuildState.RUNNING, "install", 2)) is None
    await store.apply_status(status(BuildState.RUNNING, "install", 3))
    assert history(await store.get("b_1")) == [
        ("checkout", "succeeded", 1.0),
        ("install", "running", None),
    ]


async def test_a_resumed_attempt_restarts_the_steps_and_old_events_are_ignored(
    redis: aioredis.Redis,
) -> None:
    store = await dispatched_build(redis)
    await store.apply_status(status(BuildState.RUNNING, "checkout", 1))
    await store.apply_status(status(BuildState.RUNNING, "install", 2))
    # The builder was lost; another one runs the build again from the start.
    await store.apply_status(status(BuildState.RUNNING, "checkout", 60, attempt=2))
    # A late event of the first attempt changes nothing.
    assert await store.apply_status(status(BuildState.RUNNING, "build", 61, attempt=1)) is None
    await store.apply_status(status(BuildState.RUNNING, "install", 62, attempt=2))
    resumed = await store.get("b_1")
    assert resumed is not None and resumed.attempt == 2
    assert history(resumed) == [("checkout", "succeeded", 2.0), ("install", "running", None)]
    assert resumed.steps[0].started_at == at(60)
