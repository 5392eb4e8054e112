"""Fixtures for retention: the storage app in-process, share links, the data set, and a
sweep wired to them; the gateway fixtures for the API tests."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis
from hypercorn.asyncio import serve
from hypercorn.config import Config

from gobuild.platform.auth.share_links import ShareLinkStore
from gobuild.platform.config import AuthSettings, RetentionSettings, Settings
from gobuild.platform.storage.app import create_app as create_storage_app
from gobuild.platform.storage_client import StorageClient
from gobuild.retention.sweep import RetentionSweep
from tests.gateway.conftest import StartGateway, gateway, start_gateway
from tests.gateway.support import Gateway
from tests.retention.dataset import DataSet, StorageUnderTest

__all__ = ["gateway", "start_gateway"]

MakeSweep = Callable[..., RetentionSweep]

SHARE_LINK_SECRET = "retention-test-secret-that-is-long-enough-0123"

# The instance defaults of these tests: artifacts and logs 30 days, the newest build kept
# whole, deployments 30 days, build records 90 days, caches unused for 14 days.
DEFAULTS: dict[str, Any] = {
    "retention_artifact_days": 30,
    "retention_keep_last": 1,
    "retention_deployment_days": 30,
    "retention_record_days": 90,
    "retention_cache_days": 14,
}


def retention_settings(**overrides: Any) -> RetentionSettings:
    return RetentionSettings(_env_file=None, **{**DEFAULTS, **overrides})  # type: ignore[call-arg]


@pytest.fixture
async def storage(make_settings: Callable[..., Settings]) -> AsyncIterator[StorageUnderTest]:
    """The storage app, started, without the log consumer; retention's client reaches it
    in-process."""
    settings = make_settings()
    app = create_storage_app(settings, consume_logs=False)
    async with app.test_app():
        transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
        async with httpx.AsyncClient(transport=transport, base_url=settings.storage_url) as http:
            yield StorageUnderTest(app, http, StorageClient(http, settings), settings)


@pytest.fixture
def share_links(redis: aioredis.Redis) -> ShareLinkStore:
    return ShareLinkStore(redis, AuthSettings(_env_file=None), SHARE_LINK_SECRET)  # type: ignore[call-arg]


@pytest.fixture
def dataset(
    redis: aioredis.Redis, storage: StorageUnderTest, share_links: ShareLinkStore
) -> DataSet:
    return DataSet(redis, storage, share_links)


@pytest.fixture
def make_sweep(
    redis: aioredis.Redis, storage: StorageUnderTest, share_links: ShareLinkStore
) -> Callable[..., RetentionSweep]:
    """A sweep on the test's Redis and storage; `storage=` replaces the client (a wrapper),
    other keywords go to the sweep."""

    def make(**options: Any) -> RetentionSweep:
        return RetentionSweep(
            redis=redis,
            storage=options.pop("storage", storage.client),
            share_links=share_links,
            settings=options.pop("settings", retention_settings()),
            **options,
        )

    return make


@dataclass
class RetentionApi:
    """A gateway (retention defaults as in `DEFAULTS`), the storage service it reaches at its
    configured URL, and a data set on both."""

    gateway: Gateway
    storage: StorageUnderTest
    dataset: DataSet


@contextlib.asynccontextmanager
async def served_storage(settings: Settings) -> AsyncIterator[StorageUnderTest]:
    """The storage service under hypercorn at `settings.storage_url` (for callers that reach
    it by URL: the gateway, the retention service)."""
    app = create_storage_app(settings, consume_logs=False)
    config = Config()
    config.bind = [f"127.0.0.1:{settings.storage_port}"]
    config.graceful_timeout = 2.0
    stop = asyncio.Event()
    server = asyncio.create_task(serve(app, config, shutdown_trigger=stop.wait))  # type: ignore[arg-type]
    try:
        async with httpx.AsyncClient(base_url=settings.storage_url) as http:
            async with asyncio.timeout(20):
                while not await _up(http):
                    assert not server.done(), "storage did not start"
                    await asyncio.sleep(0.05)
            yield StorageUnderTest(app, http, StorageClient(http, settings), settings)
    finally:
        stop.set()
        await asyncio.wait_for(server, 20)


async def _up(http: httpx.AsyncClient) -> bool:
    try:
        return (await http.get("/healthz")).status_code == 200
    except httpx.TransportError:
        return False


@pytest.fixture
async def retention_api(
    start_gateway: StartGateway,
    redis: aioredis.Redis,
    share_links: ShareLinkStore,
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[RetentionApi]:
    for name, value in DEFAULTS.items():
        monkeypatch.setenv(f"GOBUILD_{name.upper()}", str(value))
    gateway = await start_gateway()
    async with served_storage(gateway.settings) as storage:
        yield RetentionApi(gateway, storage, DataSet(redis, storage, share_links))
