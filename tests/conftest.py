"""Fixtures that start the real parts: a Redis server, the embedded Kafka-protocol broker,
the Docker engine and local git repositories. Each is fresh per test unless said otherwise."""

from __future__ import annotations

import os
import subprocess
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import docker
import pytest
import redis.asyncio as aioredis

from gobuild.platform.config import Settings
from gobuild.platform.devstack import free_port, start_broker, start_redis
from gobuild.platform.state import connect_redis

SHARED = Path(__file__).resolve().parents[2] / "shared"
WEBHOOK_FIXTURES = Path(os.environ.get("GOBUILD_FIXTURES", SHARED / "fixtures" / "webhooks"))
BUILD_IMAGE = os.environ.get("GOBUILD_BUILD_IMAGE", "gobuild/build-base:bookworm")


@pytest.fixture
def redis_url(tmp_path: Path) -> Iterator[str]:
    port = free_port()
    server = start_redis(port, tmp_path / "redis")
    yield f"redis://127.0.0.1:{port}/0"
    server.stop()


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = connect_redis(redis_url)
    yield client
    await client.aclose()


@pytest.fixture
def kafka_bootstrap() -> Iterator[str]:
    port = free_port()
    broker = start_broker(port)
    yield f"127.0.0.1:{port}"
    broker.stop()


@pytest.fixture
def make_settings(tmp_path: Path) -> Callable[..., Settings]:
    """Settings isolated in this test's temporary folder; keyword arguments override."""

    def make(**overrides: object) -> Settings:
        values: dict[str, object] = {
            "data_dir": tmp_path / "data",
            "build_image": BUILD_IMAGE,
            "admin_api_key": "test-admin-key",
            "gateway_port": free_port(),
            "orchestrator_port": free_port(),
            "storage_port": free_port(),
        }
        values.update(overrides)
        settings = Settings(**values)  # type: ignore[arg-type]
        if "storage_url" not in overrides:
            settings.storage_url = f"http://127.0.0.1:{settings.storage_port}"
        if "orchestrator_url" not in overrides:
            settings.orchestrator_url = f"http://127.0.0.1:{settings.orchestrator_port}"
        return settings

    return make


@pytest.fixture(scope="session")
def docker_client() -> Iterator[docker.DockerClient]:
    """The local Docker engine; scripts/setup.sh starts it. Without it the test errors."""
    client = docker.from_env(timeout=60)
    client.ping()
    client.images.get(BUILD_IMAGE)
    yield client
    client.close()


def git(cwd: Path, *args: str) -> str:
    result = subprocess.run(
        ["git", *args], cwd=cwd, check=True, capture_output=True, text=True, env=GIT_ENV
    )
    return result.stdout.strip()


GIT_ENV = {
    **os.environ,
    "GIT_AUTHOR_NAME": "Test Author",
    "GIT_AUTHOR_EMAIL": "author@example.com",
    "GIT_COMMITTER_NAME": "Test Author",
    "GIT_COMMITTER_EMAIL": "author@example.com",
}


@dataclass
class GitRepo:
    """A bare repository (the 'remote') and a working clone to commit and push from."""

    bare: Path
    work: Path

    def commit(self, files: dict[str, str], message: str = "change", branch: str = "main") -> str:
        """Write files, commit, push to the bare repository; returns the commit SHA."""
        for name, content in files.items():
            path = self.work / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(content)
        git(self.work, "checkout", "-B", branch)
        git(self.work, "add", "-A")
        git(self.work, "commit", "-q", "-m", message)
        git(self.work, "push", "-q", "origin", f"{branch}:{branch}")
        return git(self.work, "rev-parse", "HEAD")


@pytest.fixture
def git_repo(tmp_path: Path) -> GitRepo:
    bare = tmp_path / "remote" / "site.git"
    bare.parent.mkdir(parents=True)
    git(bare.parent, "init", "-q", "--bare", "-b", "main", str(bare))
    work = tmp_path / "work"
    git(tmp_path, "clone", "-q", str(bare), str(work))
    return GitRepo(bare=bare, work=work)
