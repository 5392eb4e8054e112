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
from gobuild.platform.stores.keys import key_build_resource_samples
from gobuild.platform.stores.projects import ProjectStore
from gobuild.platform.stores.resource_samples import (
    MAX_SAMPLES,
    SAMPLES_TTL_SECONDS,
    ResourceSampleStore,
)


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


async def test_samples_on_build_status_are_kept_per_build_oldest_first_and_bounded(
    make_settings: Callable[..., Settings], redis: aioredis.Redis
) -> None:
    samples = ResourceSampleStore(redis, max_samples=3)
    producer = EventProducer(make_settings(), client_id="unused")
    dispatcher = Dispatcher(
        make_settings(), BuildStore(redis), ProjectStore(redis), producer, resource_samples=samples
    )

    for cpu in (10.0, 20.0, 30.0, 40.0, 50.0):
        await dispatcher.handle_record(
            sample(cpu_percent=cpu, step="install" if cpu < 30 else "build")
        )
    await dispatcher.handle_record(sample(build_id="b_2", cpu_percent=5.0, memory_limit_bytes=None))

    kept = await samples.samples("b_1")
    assert [(s.step, s.cpu_percent) for s in kept] == [
        ("build", 30.0),
        ("build", 40.0),
        ("build", 50.0),
    ]
    assert (
        kept[0].memory_bytes == 64 * 1024 * 1024 and kept[0].memory_limit_bytes == 512 * 1024 * 1024
    )
    assert kept[0].at <= kept[1].at <= kept[2].at
    other = await samples.samples("b_2")
    assert [(s.cpu_percent, s.memory_limit_bytes) for s in other] == [(5.0, None)]
    ttl = await redis.ttl(key_build_resource_samples("b_1"))
    assert 0 < ttl <= SAMPLES_TTL_SECONDS
    assert await samples.samples("b_none") == []


async def test_the_default_store_caps_a_build_at_an_hour_of_samples(
    make_settings: Callable[..., Settings], redis: aioredis.Redis
) -> None:
    dispatcher = Dispatcher(
        make_settings(),
        BuildStore(redis),
        ProjectStore(redis),
        EventProducer(make_settings(), client_id="unused"),
    )
    assert dispatcher.resource_samples.max_samples == MAX_SAMPLES == 3600
    await dispatcher.handle_record(sample())
    assert len(await dispatcher.resource_samples.samples("b_1")) == 1
