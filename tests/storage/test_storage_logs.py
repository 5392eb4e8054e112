"""Build logs through the real broker: the storage consumer persists `build-logs` chunks
in order and exactly once, and `GET /logs/<id>?follow=1` streams them as they arrive."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable

import httpx
import pytest
from aiokafka import AIOKafkaProducer
from storage_testing import StorageUnderTest, create_storage_app, running_server

from gobuild.platform.bus import EventProducer, ensure_topics
from gobuild.platform.config import Settings
from gobuild.platform.events import TOPIC_BUILD_LOGS, LogChunk
from gobuild.platform.storage.services import EXTENSION_KEY, StorageServices
from gobuild.platform.storage_client import internal_headers
from tests.conftest import wait_until

WAIT_SECONDS = 30


def chunk(build_id: str, seq: int, *lines: str, final: bool = False) -> LogChunk:
    return LogChunk(
        build_id=build_id, project_id="p1", seq=seq, stream="stdout", lines=list(lines), final=final
    )


@pytest.fixture
async def bus_settings(
    make_settings: Callable[..., Settings], kafka_bootstrap: str
) -> AsyncIterator[Settings]:
    settings = make_settings(kafka_bootstrap=kafka_bootstrap)
    await ensure_topics(settings)
    yield settings


def unique(name: str) -> str:
    """A build id that no other test on the shared broker publishes logs for."""
    return f"{name}-{uuid.uuid4().hex[:8]}"


async def publish(producer: EventProducer, *chunks: LogChunk) -> None:
    for item in chunks:
        await producer.publish(TOPIC_BUILD_LOGS, item)


async def publish_raw(settings: Settings, key: bytes, *values: bytes) -> None:
    raw = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
    await raw.start()
    try:
        for value in values:
            await raw.send_and_wait(TOPIC_BUILD_LOGS, value, key=key)
    finally:
        await raw.stop()


async def test_logs_from_the_bus_are_stored_in_order_once_and_marked_complete(
    bus_settings: Settings, producer: EventProducer
) -> None:
    b1 = unique("b1")
    await publish(producer, chunk(b1, 0, "Cloning", "Installing"), chunk(b1, 1, "Building"))
    await publish(producer, chunk(b1, 1, "Building"))  # a redelivery from the builder
    await publish_raw(bus_settings, b1.encode(), b"not json at all", b'{"type": "build.log"}')
    await publish(producer, chunk("../../evil", 0, "path traversal attempt"))
    await publish(producer, chunk(b1, 0, "Cloning", "Installing"))
    await publish(producer, chunk(b1, 2, "Done", final=True))

    app = create_storage_app(bus_settings)
    async with app.test_app() as test_app:
        client = test_app.test_client()
        followed = await asyncio.wait_for(client.get(f"/logs/{b1}?follow=1"), WAIT_SECONDS)
        assert await followed.get_data(as_text=True) == "Cloning\nInstalling\nBuilding\nDone\n"

        response = await client.get(f"/logs/{b1}")
        assert response.status_code == 200
        assert await response.get_data(as_text=True) == "Cloning\nInstalling\nBuilding\nDone\n"
        assert response.headers["Content-Type"] == "text/plain; charset=utf-8"
        assert response.headers["X-Log-Complete"] == "true"

    # The consumer group also stored what earlier tests published; none of it is named evil.
    stored = {p.name for p in bus_settings.logs_dir.iterdir()}
    assert {f"{b1}.log", f"{b1}.log.json"} <= stored
    assert not [name for name in stored if "evil" in name]
    assert not (bus_settings.data_dir.parent / "evil.log").exists()


async def test_follow_streams_lines_as_they_are_published_and_ends_after_the_final_chunk(
    bus_settings: Settings, producer: EventProducer
) -> None:
    app = create_storage_app(bus_settings)
    async with (
        running_server(app) as base_url,
        httpx.AsyncClient(
            base_url=base_url,
            headers=internal_headers(bus_settings.internal_token),
            timeout=WAIT_SECONDS,
        ) as client,
    ):
        # Warm up: once this log is complete the consumer has joined its group.
        warmup, b2 = unique("warmup"), unique("b2")
        await publish(producer, chunk(warmup, 0, "ready", final=True))
        warmed = await client.get(f"/logs/{warmup}", params={"follow": "1"})
        assert warmed.text == "ready\n"

        async with client.stream("GET", f"/logs/{b2}", params={"follow": "1"}) as response:
            assert response.status_code == 200
            assert response.headers["x-log-complete"] == "false"
            assert response.headers["content-type"] == "text/plain; charset=utf-8"
            received = response.aiter_raw()

            await publish(producer, chunk(b2, 0, "step 1"))
            assert await asyncio.wait_for(anext(received), 5) == b"step 1\n"
            await publish(producer, chunk(b2, 1, "step 2", "step 3"))
            assert await asyncio.wait_for(anext(received), 5) == b"step 2\nstep 3\n"
            await publish(producer, chunk(b2, 2, "finished", final=True))
            rest = await asyncio.wait_for(_collect(received), 5)
            assert b"".join(rest) == b"finished\n"

        plain = await client.get(f"/logs/{b2}")
        assert plain.text == "step 1\nstep 2\nstep 3\nfinished\n"
        assert plain.headers["x-log-complete"] == "true"


async def test_follow_ends_when_the_client_disconnects(
    bus_settings: Settings, producer: EventProducer
) -> None:
    app = create_storage_app(bus_settings)
    logs = app.extensions[EXTENSION_KEY].logs
    async with (
        running_server(app) as base_url,
        httpx.AsyncClient(
            base_url=base_url,
            headers=internal_headers(bus_settings.internal_token),
            timeout=WAIT_SECONDS,
        ) as client,
    ):
        b3 = unique("b3")
        await publish(producer, chunk(b3, 0, "running"))
        async with client.stream("GET", f"/logs/{b3}", params={"follow": "1"}) as response:
            assert await asyncio.wait_for(anext(response.aiter_raw()), WAIT_SECONDS) == b"running\n"
            assert logs.follower_count(b3) == 1
        # The client went away while the build still runs: the server lets go of it.
        await wait_until(
            lambda: logs.follower_count(b3) == 0,
            timeout=5,
            message="the server kept following after the client left",
        )


async def test_log_of_an_unknown_build_is_404_unless_followed(storage: StorageUnderTest) -> None:
    response = await storage.client.get("/logs/nobuild")
    assert response.status_code == 404
    assert await response.get_json() == {
        "error": "log not found",
        "detail": "build 'nobuild' has no log yet",
    }
    invalid = await storage.client.get("/logs/Not.Valid")
    assert invalid.status_code == 400
    services: StorageServices = storage.app.extensions[EXTENSION_KEY]
    assert services.logs.follower_count("nobuild") == 0


async def _collect(stream: AsyncIterator[bytes]) -> list[bytes]:
    return [part async for part in stream]
