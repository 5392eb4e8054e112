"""While Redis cannot be reached the gateway answers 503 with Retry-After, from the routes and
from the authentication and rate-limit layer alike, and recovers when Redis is back."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from gobuild.platform.devstack import ChildProcess, free_port, start_redis
from gobuild.platform.gateway.errors import REDIS_RETRY_AFTER_SECONDS
from tests.gateway.support import AUTH, Gateway


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[ChildProcess]:
    server = start_redis(free_port(), tmp_path / "redis")
    yield server
    server.stop()


@pytest.fixture
def redis_url(own_redis: ChildProcess) -> str:
    """The gateway's Redis is this test's own server, so the test can stop it."""
    return f"redis://127.0.0.1:{own_redis.port}/0"


async def test_requests_get_503_with_retry_after_while_redis_is_down_and_work_after(
    gateway: Gateway, own_redis: ChildProcess
) -> None:
    project = await gateway.create_project()
    own_redis.stop()

    requests = [
        ("GET", f"/api/projects/{project['id']}", AUTH, None),  # a route
        ("GET", "/api/me", {}, None),  # anonymous: the rate limiter runs first
        ("POST", "/api/auth/login", {}, {"username": "admin", "password": "x"}),
        ("GET", "/api/me", {"Authorization": "Bearer not-a-valid-token"}, None),
        ("POST", "/webhooks/github", {"X-GitHub-Event": "ping"}, {}),
    ]
    for method, path, headers, body in requests:
        response = await gateway.client.open(path, method=method, headers=headers, json=body)
        assert response.status_code == 503, (path, await response.get_data(as_text=True))
        assert response.headers["Retry-After"] == str(REDIS_RETRY_AFTER_SECONDS)
        answer = await response.get_json()
        assert answer["error"] == "redis is unavailable"
        assert "retry" in answer["detail"]

    own_redis.start()
    response = await gateway.client.get(f"/api/projects/{project['id']}", headers=AUTH)
    assert response.status_code == 200
    assert (await response.get_json())["name"] == project["name"]


async def test_a_redis_restart_between_requests_goes_unnoticed(
    gateway: Gateway, own_redis: ChildProcess
) -> None:
    """Connections kept from before the restart are re-opened, not reported as an outage."""
    project = await gateway.create_project()
    path = f"/api/projects/{project['id']}"
    # Concurrent requests leave several idle connections in the gateway's pool.
    await asyncio.gather(*(gateway.client.get(path, headers=AUTH) for _ in range(8)))

    own_redis.stop()
    own_redis.start()

    statuses = [(await gateway.client.get(path, headers=AUTH)).status_code for _ in range(8)]
    assert statuses == [200] * 8
