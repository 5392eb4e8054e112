"""Auto-cancel on a real Redis and broker: a newer push to a branch cancels the branch's older
push builds when it is queued; queued ones end at once, running ones are stopped by their
builder, and every one says which build superseded it."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import timedelta

import redis.asyncio as aioredis

from gobuild.builder_agent.build_run import Outcome
from gobuild.builder_agent.delivery import ResultDelivery
from gobuild.builder_agent.reporter import BuildReporter
from gobuild.platform.build_state import BuildState
from gobuild.platform.build_triggers import TriggerRequest, new_build
from gobuild.platform.bus import EventProducer
from gobuild.platform.config import Settings
from gobuild.platform.events import (
    TOPIC_BUILD_COMPLETIONS,
    BuildCompleted,
    BuildStatusChanged,
    TriggerSource,
    utcnow,
)
from gobuild.platform.orchestrator.auto_cancel import cancel_superseded_builds
from gobuild.platform.records import Build, Project, new_id
from gobuild.platform.stores.build_queue import BuildQueue
from gobuild.platform.stores.builds import BuildStore
from gobuild.platform.stores.claims import BuildClaims
from gobuild.platform.stores.keys import CHANNEL_CANCEL
from gobuild.platform.stores.outbox import ResultOutbox
from gobuild.platform.stores.projects import ProjectStore
from tests.kafka_reading import read_events
from tests.orchestrator.builder_runs import builder_run


async def make_project(redis: aioredis.Redis, **fields: object) -> Project:
    project = Project(
        id=new_id("p_"),
        name=f"site-{new_id('')[:6]}",
        repo_url="https://github.com/acme/site.git",
        provider="github",
        webhook_secret="x" * 20,
        **fields,  # type: ignore[arg-type]
    )
    assert await ProjectStore(redis).create(project)
    return project


async def accept(
    redis: aioredis.Redis,
    project: Project,
    *,
    source: TriggerSource = "github",
    branch: str | None = "main",
    tag: str | None = None,
    ago: float = 0.0,
    state: BuildState = BuildState.QUEUED,
) -> Build:
    """A build accepted as the gateway accepts one, `ago` seconds ago, moved to `state`."""
    ref = f"refs/tags/{tag}" if tag else f"refs/heads/{branch}"
    build, trigger = new_build(
        project,
        TriggerRequest(source=source, ref=ref, branch=branch, tag=tag, commit_sha="a" * 40),
    )
    build = build.model_copy(update={"created_at": utcnow() - timedelta(seconds=ago)})
    builds = BuildStore(redis)
    await builds.record_trigger(build, trigger)
    number = await builds.next_number(project.id)
    await builds.update(build.id, number=number)
    moves = [BuildState.DISPATCHED, BuildState.RUNNING]
    for move in moves[: moves.index(state) + 1] if state in moves else []:
        await builds.apply_status(
            BuildStatusChanged(build_id=build.id, project_id=project.id, state=move)
        )
    if state == BuildState.QUEUED:
        await BuildQueue(redis).enqueue(build.id, build.created_at.timestamp())
    return await builds.get(build.id) or build


async def test_a_push_cancels_the_branchs_older_push_builds_that_no_builder_holds_at_once(
    redis: aioredis.Redis,
    producer: EventProducer,
    make_settings: Callable[..., Settings],
    kafka_bootstrap: str,
) -> None:
    project = await make_project(redis)
    queued = await accept(redis, project, ago=30)
    dispatched = await accept(redis, project, ago=20, state=BuildState.DISPATCHED)
    other_branch = await accept(redis, project, branch="feature", ago=15)
    from_api = await accept(redis, project, source="api", ago=12)
    redeploy = await accept(redis, project, source="redeploy", ago=11)
    tag = await accept(redis, project, branch=None, tag="v1.0", ago=10)
    newest = await accept(redis, project, ago=5)
    pushed_after = await accept(redis, project, ago=-5)  # accepted after `newest`
    builds = BuildStore(redis)

    ended = await cancel_superseded_builds(builds, producer, newest, project)

    reason = f"superseded by build #{newest.number} ({newest.id})"
    assert {b.id for b in ended} == {queued.id, dispatched.id}
    for old in (queued, dispatched):
        shown = await builds.get(old.id)
        assert shown is not None
        assert (shown.state, shown.reason, shown.superseded_by) == (
            BuildState.CANCELLED,
            reason,
            newest.id,
        )
        assert not await builds.is_pending(old.id)
    assert not await BuildQueue(redis).is_queued(queued.id)
    untouched = (other_branch, from_api, redeploy, tag, newest, pushed_after)
    for build in untouched:
        shown = await builds.get(build.id)
        assert shown is not None and shown.state == build.state and shown.superseded_by is None
    assert await BuildQueue(redis).is_queued(newest.id)
    completions = await read_events(
        make_settings(kafka_bootstrap=kafka_bootstrap),
        [TOPIC_BUILD_COMPLETIONS],
        2,
    )
    assert sorted((c.build_id, c.state, c.error) for c in completions) == sorted(
        (old.id, BuildState.CANCELLED, reason) for old in (queued, dispatched)
    )


async def test_a_running_push_build_is_stopped_by_its_builder_and_ends_saying_why(
    redis: aioredis.Redis,
    producer: EventProducer,
    make_settings: Callable[..., Settings],
    kafka_bootstrap: str,
) -> None:
    project = await make_project(redis)
    running = await accept(redis, project, ago=60, state=BuildState.RUNNING)
    claims = BuildClaims(redis, "builder-1")
    await claims.beat({"id": "builder-1", "running": [running.id], "capacity": 1})
    assert await claims.claim(running.id)
    newest = await accept(redis, project)
    builds = BuildStore(redis)
    pubsub = redis.pubsub()
    await pubsub.subscribe(CHANNEL_CANCEL)
    try:
        [asked] = await cancel_superseded_builds(builds, producer, newest, project)
        message = None
        while message is None:
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=5)
    finally:
        await pubsub.aclose()

    # Its builder is told (the channel the builder agents listen on), and ends it.
    assert message["data"] == running.id
    assert (asked.state, asked.superseded_by) == (BuildState.RUNNING, newest.id)
    settings = make_settings(kafka_bootstrap=kafka_bootstrap)
    run = builder_run(settings, running, producer)
    assert await builds.cancel_requested(running.id)  # what stops a run that missed the message
    reporter = BuildReporter(producer, "builder-1")
    delivery = ResultDelivery(ResultOutbox(redis), builds, reporter)
    # Stopped mid-step, the pipeline's outcome knows no more than "cancelled".
    await delivery.deliver(reporter.result(run, Outcome(BuildState.CANCELLED, "cancelled"), 2.0))

    reason = f"superseded by build #{newest.number} ({newest.id})"
    [completion] = await read_events(settings, [TOPIC_BUILD_COMPLETIONS], 1)
    assert isinstance(completion, BuildCompleted)
    assert (completion.build_id, completion.state, completion.error) == (
        running.id,
        BuildState.CANCELLED,
        reason,
    )
    # The orchestrator applies the builder's result.
    result = await ResultOutbox(redis).get(running.id)
    assert result is not None
    await builds.apply_completion(result.completion)
    await builds.apply_status(result.status)
    shown = await builds.get(running.id)
    assert shown is not None
    assert (shown.state, shown.reason, shown.superseded_by) == (
        BuildState.CANCELLED,
        reason,
        newest.id,
    )


async def test_a_build_that_succeeds_before_its_cancel_lands_is_not_marked_superseded(
    redis: aioredis.Redis, producer: EventProducer
) -> None:
    project = await make_project(redis)
    running = await accept(redis, project, ago=60, state=BuildState.RUNNING)
    claims = BuildClaims(redis, "builder-1")
    await claims.beat({"id": "builder-1", "running": [running.id], "capacity": 1})
    assert await claims.claim(running.id)
    builds = BuildStore(redis)

    await cancel_superseded_builds(builds, producer, await accept(redis, project), project)
    await builds.apply_completion(
        BuildCompleted(
            build_id=running.id,
            project_id=project.id,
            state=BuildState.SUCCEEDED,
            duration_seconds=3.0,
            builder_id="builder-1",
        )
    )

    shown = await builds.get(running.id)
    assert shown is not None
    assert (shown.state, shown.superseded_by) == (BuildState.SUCCEEDED, None)


async def test_nothing_is_cancelled_without_auto_cancel_or_by_a_build_that_is_no_branch_push(
    redis: aioredis.Redis, producer: EventProducer
) -> None:
    builds = BuildStore(redis)
    switched_off = await make_project(redis, auto_cancel=False)
    kept = await accept(redis, switched_off, ago=10)
    assert (
        await cancel_superseded_builds(
            builds, producer, await accept(redis, switched_off), switched_off
        )
        == []
    )

    project = await make_project(redis)
    older = await accept(redis, project, ago=10)
    for newer in (
        await accept(redis, project, source="api"),
        await accept(redis, project, source="redeploy"),
        await accept(redis, project, source="dependency"),
        await accept(redis, project, branch=None, tag="v2"),
    ):
        assert await cancel_superseded_builds(builds, producer, newer, project) == []
    await asyncio.sleep(0)
    for build in (kept, older):
        shown = await builds.get(build.id)
        assert shown is not None and shown.state == BuildState.QUEUED
