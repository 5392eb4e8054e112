"""Fixtures that start the real parts: one Redis server and one embedded Kafka-protocol broker
per test session, the Docker engine and local git repositories.

Tests share the servers, not their data: each test gets an empty Redis database of its own
(`redis_url`), and a test reading topics with `tests.kafka_reading` sees only what was
published since it began. The services' consumer groups may still meet records another test
left behind; those name builds that are not in this test's Redis database and are skipped.
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import docker
import pytest
import redis.asyncio as aioredis
from redis import Redis

from gobuild.platform.bus import EventProducer, wait_for_topics
from gobuild.platform.config import Settings
from gobuild.platform.devstack import free_port, start_broker, start_redis
from gobuild.platform.localstack import BUILD_IMAGE as BUILD_IMAGE
from gobuild.platform.localstack import GitRepo as GitRepo
from gobuild.platform.localstack import git as git
from gobuild.platform.stores.connection import connect_redis
from tests.kafka_reading import mark_test_start

WEBHOOK_FIXTURES = Path(__file__).resolve().parent / "fixtures" / "webhooks"
# Storage refuses every request without it; `make_settings` gives every service this one.
INTERNAL_TOKEN = "test-internal-token"
# redis-server's default number of databases: tests take them in turn, each emptied first.
REDIS_DATABASES = 16

T = TypeVar("T")


async def wait_until(
    condition: Callable[[], T | Awaitable[T]],
    *,
    timeout: float = 10.0,
    interval: float = 0.05,
    message: str = "the condition never held",
) -> T:
    """Call `condition` (plain or async) until it returns something truthy and return that;
    fail the test with `message` after `timeout` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        result = condition()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return result  # type: ignore[return-value]
        if loop.time() >= deadline:
            pytest.fail(f"{message} (waited {timeout:g} s)")
        await asyncio.sleep(interval)


@dataclass
class RedisServer:
    """The session's redis-server and the database numbers the tests take in turn."""

    port: int
    databases: Iterator[int]

    def empty_database(self) -> int:
        """The next database, emptied of whatever an earlier test left in it."""
        number = next(self.databases)
        with Redis(host="127.0.0.1", port=self.port, db=number) as client:
            client.flushdb()
        return number


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    port = free_port()
    server = start_redis(port, tmp_path_factory.mktemp("redis"))
    yield RedisServer(port, itertools.cycle(range(REDIS_DATABASES)))
    server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """The URL of an empty Redis database that is this test's alone."""
    return f"redis://127.0.0.1:{redis_server.port}/{redis_server.empty_database()}"


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = connect_redis(redis_url)
    yield client
    await client.aclose()


@pytest.fixture(scope="session")
async def kafka_broker() -> AsyncIterator[str]:
    """The session's broker, with every topic created (default partition count) up front."""
    port = free_port()
    broker = start_broker(port)
    address = f"127.0.0.1:{port}"
    await wait_for_topics(Settings(_env_file=None, kafka_bootstrap=address))  # type: ignore[call-arg]
    yield address
    broker.stop()


@pytest.fixture
def kafka_bootstrap(kafka_broker: str) -> str:
    """The broker's address; records published before this test began are not its own."""
    mark_test_start()
    return kafka_broker


@pytest.fixture
def fresh_kafka_bootstrap() -> Iterator[str]:
    """A broker of this test's own, without topics: for a test of the broker as a whole."""
    port = free_port()
    broker = start_broker(port)
    yield f"127.0.0.1:{port}"
    broker.stop()


@pytest.fixture
def make_settings(tmp_path: Path) -> Callable[..., Settings]:
    """Settings isolated in this test's temporary folder (never read from a `.env`);
    keyword arguments override."""

    def make(**overrides: object) -> Settings:
        values: dict[str, object] = {
            "data_dir": tmp_path / "data",
            "build_image": BUILD_IMAGE,
            "admin_api_key": "test-admin-key",
            "internal_token": INTERNAL_TOKEN,
            "gateway_port": free_port(),
            "orchestrator_port": free_port(),
            "storage_port": free_port(),
        }
        values.update(overrides)
        settings = Settings(_env_file=None, **values)  # type: ignore[arg-type,call-arg]
        if "storage_url" not in overrides:
            settings.storage_url = f"http://127.0.0.1:{settings.storage_port}"
        if "orchestrator_url" not in overrides:
            settings.orchestrator_url = f"http://127.0.0.1:{settings.orchestrator_port}"
        return settings

    return make


@pytest.fixture
async def producer(
    kafka_bootstrap: str, make_settings: Callable[..., Settings]
) -> AsyncIterator[EventProducer]:
    """Publishes events to the session's broker as a service would."""
    producer = EventProducer(make_settings(kafka_bootstrap=kafka_bootstrap), client_id="test")
    await producer.start()
    yield producer
    await producer.stop()


@pytest.fixture(scope="session")
def docker_client() -> Iterator[docker.DockerClient]:
    """The local Docker engine; scripts/setup.sh starts it. Without it the test errors."""
    client = docker.from_env(timeout=60)
    client.ping()
    client.images.get(BUILD_IMAGE)
    yield client
    client.close()


@pytest.fixture
def git_repo(tmp_path: Path) -> GitRepo:
    return GitRepo.create(tmp_path)
