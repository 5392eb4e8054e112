"""Project dependencies on a real Redis and broker: a successful production build of a project
queues a production build of each project that depends on it, once, through the orchestrator's
normal trigger path."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pytest
import redis.asyncio as aioredis

from gobuild.platform.build_state import BuildState
from gobuild.platform.build_triggers import TriggerRequest, new_build
from gobuild.platform.bus import EventProducer
from gobuild.platform.config import Settings
from gobuild.platform.events import BuildCompleted, BuildStatusChanged
from gobuild.platform.orchestrator.dependents import trigger_dependents
from gobuild.platform.orchestrator.dispatch import Dispatcher
from gobuild.platform.records import Build, Project, new_id
from gobuild.platform.stores.build_queue import BuildQueue
from gobuild.platform.stores.builds import BuildStore
from gobuild.platform.stores.projects import ProjectStore


@pytest.fixture
def dispatcher(
    make_settings: Callable[..., Settings],
    redis_url: str,
    kafka_bootstrap: str,
    redis: aioredis.Redis,
    producer: EventProducer,
) -> Dispatcher:
    settings = make_settings(redis_url=redis_url, kafka_bootstrap=kafka_bootstrap)
    return Dispatcher(settings, BuildStore(redis), ProjectStore(redis), producer)


async def make_project(
    redis: aioredis.Redis, name: str, depends_on: Sequence[Project] = (), **fields: object
) -> Project:
    project = Project(
        id=new_id("p_"),
        name=name,
        repo_url=f"/srv/{name}.git",
        provider="git",
        webhook_secret="x" * 20,
        depends_on=[p.id for p in depends_on],
        **fields,  # type: ignore[arg-type]
    )
    assert await ProjectStore(redis).create(project)
    return project


async def ended_build(
    redis: aioredis.Redis,
    project: Project,
    state: BuildState = BuildState.SUCCEEDED,
    branch: str | None = None,
) -> Build:
    """A build of `project` (its production branch unless `branch`) a builder ran to `state`."""
    branch = branch or project.production_branch
    build, trigger = new_build(
        project, TriggerRequest(source="api", ref=f"refs/heads/{branch}", branch=branch)
    )
    builds = BuildStore(redis)
    await builds.record_trigger(build, trigger)
    await builds.forget_trigger(build.id)
    for move in (BuildState.DISPATCHED, BuildState.RUNNING):
        await builds.apply_status(
            BuildStatusChanged(build_id=build.id, project_id=project.id, state=move)
        )
    ended = await builds.apply_completion(
        BuildCompleted(
            build_id=build.id,
            project_id=project.id,
            state=state,
            duration_seconds=2.0,
            commit_sha="c" * 40,
            builder_id="builder-1",
        )
    )
    assert ended is not None
    return ended


async def builds_of(redis: aioredis.Redis, project: Project) -> list[Build]:
    return await BuildStore(redis).list_for_project(project.id)


async def succeed(dispatcher: Dispatcher, build: Build) -> Build:
    """The build runs and succeeds (a builder's events, applied as the orchestrator does)."""
    for move in (BuildState.DISPATCHED, BuildState.RUNNING):
        await dispatcher.builds.apply_status(
            BuildStatusChanged(build_id=build.id, project_id=build.project_id, state=move)
        )
    done = await dispatcher.builds.apply_completion(
        BuildCompleted(
            build_id=build.id,
            project_id=build.project_id,
            state=BuildState.SUCCEEDED,
            duration_seconds=1.0,
            builder_id="builder-1",
        )
    )
    assert done is not None
    return done


async def test_a_successful_production_build_queues_a_production_build_of_each_dependent(
    redis: aioredis.Redis, dispatcher: Dispatcher
) -> None:
    library = await make_project(redis, "library")
    site = await make_project(redis, "site", [library], production_branch="live")
    docs = await make_project(redis, "docs", [library])
    unrelated = await make_project(redis, "unrelated")
    success = await ended_build(redis, library)

    triggered = await trigger_dependents(
        dispatcher.builds, dispatcher.projects, success, dispatcher.handle_trigger
    )

    assert sorted(b.project_id for b in triggered) == sorted([site.id, docs.id])
    for project in (site, docs):
        [build] = await builds_of(redis, project)
        assert build.source == "dependency"
        assert build.triggered_by == success.id
        assert (build.ref, build.branch) == (
            f"refs/heads/{project.production_branch}",
            project.production_branch,
        )
        assert build.production is True
        assert build.commit_sha is None  # the builder builds the branch's head
        # Handed to the orchestrator's trigger path: numbered and queued for the scheduler.
        assert build.number == 1
        assert not await dispatcher.builds.is_pending(build.id)
        assert await BuildQueue(redis).is_queued(build.id)
    assert await builds_of(redis, unrelated) == []
    assert await builds_of(redis, library) == [success]


async def test_a_completion_seen_again_triggers_no_second_build(
    redis: aioredis.Redis, dispatcher: Dispatcher
) -> None:
    library = await make_project(redis, "library")
    site = await make_project(redis, "site", [library])
    success = await ended_build(redis, library)

    first = await trigger_dependents(
        dispatcher.builds, dispatcher.projects, success, dispatcher.handle_trigger
    )
    again = await trigger_dependents(
        dispatcher.builds, dispatcher.projects, success, dispatcher.handle_trigger
    )

    assert len(first) == 1 and again == []
    assert [b.id for b in await builds_of(redis, site)] == [first[0].id]


async def test_a_chain_builds_in_order_each_triggered_by_the_success_before_it(
    redis: aioredis.Redis, dispatcher: Dispatcher
) -> None:
    a = await make_project(redis, "a")
    b = await make_project(redis, "b", [a])
    c = await make_project(redis, "c", [b])

    a_success = await ended_build(redis, a)
    [b_build] = await trigger_dependents(
        dispatcher.builds, dispatcher.projects, a_success, dispatcher.handle_trigger
    )
    # C waits for B: A's success builds B only.
    assert b_build.project_id == b.id
    assert await builds_of(redis, c) == []

    b_success = await succeed(dispatcher, b_build)
    [c_build] = await trigger_dependents(
        dispatcher.builds, dispatcher.projects, b_success, dispatcher.handle_trigger
    )

    assert (c_build.project_id, c_build.triggered_by) == (c.id, b_build.id)
    assert [x.id for x in await builds_of(redis, c)] == [c_build.id]


async def test_a_project_reached_twice_builds_once_after_both_while_its_build_still_waits(
    redis: aioredis.Redis, dispatcher: Dispatcher
) -> None:
    # A diamond: d depends on b and c, which both depend on a.
    a = await make_project(redis, "a")
    b = await make_project(redis, "b", [a])
    c = await make_project(redis, "c", [a])
    d = await make_project(redis, "d", [b, c])

    a_success = await ended_build(redis, a)
    b_build, c_build = sorted(
        await trigger_dependents(
            dispatcher.builds, dispatcher.projects, a_success, dispatcher.handle_trigger
        ),
        key=lambda build: build.project_id != b.id,
    )
    [d_build] = await trigger_dependents(
        dispatcher.builds,
        dispatcher.projects,
        await succeed(dispatcher, b_build),
        dispatcher.handle_trigger,
    )
    # d's build waits (c still builds): c's success adds no second one.
    assert (
        await trigger_dependents(
            dispatcher.builds,
            dispatcher.projects,
            await succeed(dispatcher, c_build),
            dispatcher.handle_trigger,
        )
        == []
    )
    assert [x.id for x in await builds_of(redis, d)] == [d_build.id]

    # Once d's build started, a later success of c builds d again, after it.
    await dispatcher.builds.apply_status(
        BuildStatusChanged(build_id=d_build.id, project_id=d.id, state=BuildState.DISPATCHED)
    )
    c_again = await ended_build(redis, c)
    [d_again] = await trigger_dependents(
        dispatcher.builds, dispatcher.projects, c_again, dispatcher.handle_trigger
    )
    assert d_again.triggered_by == c_again.id
    assert {x.id for x in await builds_of(redis, d)} == {d_build.id, d_again.id}


@pytest.mark.parametrize(
    ("state", "branch"),
    [(BuildState.FAILED, None), (BuildState.CANCELLED, None), (BuildState.SUCCEEDED, "feature")],
)
async def test_a_build_that_failed_or_is_no_production_build_triggers_nothing(
    redis: aioredis.Redis, dispatcher: Dispatcher, state: BuildState, branch: str | None
) -> None:
    library = await make_project(redis, "library")
    site = await make_project(redis, "site", [library])
    ended = await ended_build(redis, library, state, branch)

    assert (
        await trigger_dependents(
            dispatcher.builds, dispatcher.projects, ended, dispatcher.handle_trigger
        )
        == []
    )
    assert await builds_of(redis, site) == []
