"""The dashboard's fan-out of consumed events: each goes only to the watches of its build or
project, one consumption for any number of viewers."""

from __future__ import annotations

import asyncio

from gobuild.platform.build_state import BuildState
from gobuild.platform.config import Settings
from gobuild.platform.events import BuildResourceSample, BuildStatusChanged, Event, LogChunk
from gobuild.ui.live_events import LiveEvents


def events() -> LiveEvents:
    return LiveEvents(Settings(_env_file=None))  # type: ignore[call-arg]


def status(build_id: str, project_id: str) -> BuildStatusChanged:
    return BuildStatusChanged(build_id=build_id, project_id=project_id, state=BuildState.RUNNING)


def drained(queue: asyncio.Queue[Event]) -> list[Event]:
    found = []
    while not queue.empty():
        found.append(queue.get_nowait())
    return found


async def test_events_reach_only_the_watches_of_their_build_or_project() -> None:
    live = events()
    viewers = [live.watch(builds=["b_1"]) for _ in range(3)]
    other_build = live.watch(builds=["b_2"])
    project = live.watch(projects=["p_1"])
    other_project = live.watch(projects=["p_2"])
    log = LogChunk(build_id="b_1", project_id="p_1", seq=0, stream="stdout", lines=["x"])
    sample = BuildResourceSample(
        build_id="b_1", project_id="p_1", step="build", cpu_percent=5, memory_bytes=1
    )

    for event in (status("b_1", "p_1"), log, sample):
        await live.dispatch(event)

    for viewer in viewers:
        assert [e.type for e in drained(viewer.queue)] == [
            "build.status",
            "build.log",
            "build.resources",
        ]
    assert [e.type for e in drained(project.queue)] == ["build.status"]
    assert drained(other_build.queue) == drained(other_project.queue) == []
    assert live.recent_chunks("b_1") == [log]


async def test_a_closed_watch_receives_nothing_and_is_forgotten() -> None:
    live = events()
    with live.watch(builds=["b_1"], projects=["p_1"]) as watch:
        assert live.watcher_count("b_1") == 1
    await live.dispatch(status("b_1", "p_1"))

    assert drained(watch.queue) == []
    assert live.watcher_count("b_1") == 0
