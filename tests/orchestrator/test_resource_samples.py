"""Resource samples share `build-status` with state changes: the orchestrator leaves the build
record alone for them, and records the peaks the builder reports with the completion."""

from __future__ import annotations

from collections.abc import Callable

import redis.asyncio as aioredis

from gobuild.platform.build_state import BuildState
from gobuild.platform.bus import EventProducer
from gobuild.platform.config import Settings
from gobuild.platform.events import (
    BuildCompleted,
    BuildResourceSample,
    BuildTriggered,
    encode_event,
    parse_event,
)
from gobuild.platform.orchestrator.dispatch import Dispatcher
from gobuild.platform.records import Build
from gobuild.platform.stores.builds import BuildStore
from gobuild.platform.stores.projects import ProjectStore


def sample(**fields: object) -> BuildResourceSample:
    values: dict[str, object] = {
        "build_id": "b_1",
        "project_id": "p_1",
        "step": "build",
        "cpu_percent": 87.5,
        "memory_bytes": 64 * 1024 * 1024,
        "memory_limit_bytes": 512 * 1024 * 1024,
    }
    values.update(fields)
    return BuildResourceSample(**values)  # type: ignore[arg-type]


def test_a_resource_sample_round_trips_as_its_own_event_type() -> None:
    event = sample()
    parsed = parse_event(encode_event(event))
    assert parsed == event and parsed.type == "build.resources"
    assert event.key() == b"b_1"


async def test_samples_change_no_record_and_the_completion_keeps_the_peaks(
    make_settings: Callable[..., Settings], redis: aioredis.Redis
) -> None:
    store = BuildStore(redis)
    build = Build(
        id="b_1", project_id="p_1", source="api", repo_url="/srv/site.git", ref="refs/heads/main"
    )
    trigger = BuildTriggered(
        build_id=build.id,
        project_id="p_1",
        source="api",
        repo_url=build.repo_url,
        ref=build.ref,
        branch="main",
        commit_sha=None,
    )
    await store.record_trigger(build, trigger)
    await store.update(build.id, state=BuildState.RUNNING, step="build", builder_id="agent-1")
    before = await store.get(build.id)
    # Dispatching is not involved: the producer is never used by `handle_record`.
    producer = EventProducer(make_settings(), client_id="unused")
    dispatcher = Dispatcher(make_settings(), store, ProjectStore(redis), producer)

    await dispatcher.handle_record(sample())
    assert await store.get(build.id) == before

    await dispatcher.handle_record(
        BuildCompleted(
            build_id=build.id,
            project_id="p_1",
            state=BuildState.SUCCEEDED,
            duration_seconds=4.0,
            builder_id="agent-1",
            peak_cpu_percent=87.5,
            peak_memory_bytes=64 * 1024 * 1024,
        )
    )
    done = await store.get(build.id)
    assert done is not None and done.state == BuildState.SUCCEEDED
    assert (done.peak_cpu_percent, done.peak_memory_bytes) == (87.5, 64 * 1024 * 1024)
