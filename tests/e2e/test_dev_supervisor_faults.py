"""`gobuild dev` under faults: its Redis and broker are killed and come back on their ports,
the API says 503 (not 500) while Redis is gone and keeps its data, the dev Redis needs the
generated password, and bodies that are not acceptable JSON are a 400."""

from __future__ import annotations

import os
import signal
import socket
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
import redis
import redis.exceptions

from gobuild.platform.gateway.errors import REDIS_RETRY_AFTER_SECONDS
from tests.conftest import GitRepo
from tests.e2e.stack import Stack

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

JSON = {"Content-Type": "application/json"}


def redis_port(stack: Stack) -> int:
    port = urlsplit(stack.env["GOBUILD_REDIS_URL"]).port
    assert port is not None
    return port


def broker_port(stack: Stack) -> int:
    return int(stack.env["GOBUILD_KAFKA_BOOTSTRAP"].rsplit(":", 1)[1])


def child_pid(parent: int, command: str) -> int:
    """The pid of `parent`'s child process whose command name starts with `command`."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue  # exited meanwhile
        name = text[text.index("(") + 1 : text.rindex(")")]
        ppid = int(text[text.rindex(")") + 2 :].split()[1])
        if ppid == parent and name.startswith(command):
            return int(stat.parent.name)
    raise AssertionError(f"gobuild dev ({parent}) has no {command} child")


def wait_for(condition: Callable[[], bool], stack: Stack, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen in {timeout}s\n{stack.tail()}")
        time.sleep(0.05)


def listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def test_invalid_utf8_and_deeply_nested_bodies_are_400_from_the_running_gateway(
    stack: Stack,
) -> None:
    login = httpx.post(
        f"http://127.0.0.1:{stack.port}/api/auth/login",
        content=b'{"username": "admin\xff", "password": "x"}',
        headers=JSON,
    )
    assert login.status_code == 400, login.text
    assert login.json()["error"] == "request body is not valid JSON"
    assert "not valid UTF-8" in login.json()["detail"]

    nested = stack.http.post("/api/projects", content=b"[" * 30_000 + b"]" * 30_000, headers=JSON)
    assert nested.status_code == 400, nested.text
    assert "nested more than" in nested.json()["detail"]


def test_dev_redis_requires_the_generated_password_kept_in_the_data_folder(stack: Stack) -> None:
    password_file = stack.data_dir / "redis-password"
    assert password_file.stat().st_mode & 0o777 == 0o600
    password = password_file.read_text().strip()
    port = redis_port(stack)

    with pytest.raises(redis.exceptions.RedisError, match=r"(?i)auth"):
        redis.Redis(port=port, socket_timeout=5).ping()
    client = redis.Redis(port=port, password=password, socket_timeout=5)
    assert client.ping()
    client.close()
    # redis-server replaces its command line once started: the password is not on display.
    pid = child_pid(stack.process.pid, "redis-server")
    assert password.encode() not in Path(f"/proc/{pid}/cmdline").read_bytes()


def test_killed_redis_is_restarted_and_the_api_answers_503_until_it_is_back(
    stack: Stack, git_repo: GitRepo
) -> None:
    project = stack.create_project("kept-across-restart", git_repo.bare, "s" * 32)
    path = f"/api/projects/{project['id']}"
    port = redis_port(stack)
    pid = child_pid(stack.process.pid, "redis-server")

    # Hold `gobuild dev` still for a moment so the outage lasts long enough to look at; the
    # services keep running.
    os.kill(stack.process.pid, signal.SIGSTOP)
    try:
        os.kill(pid, signal.SIGKILL)
        outage = [stack.http.get(path) for _ in range(3)]
    finally:
        os.kill(stack.process.pid, signal.SIGCONT)
    for response in outage:
        assert response.status_code == 503, response.text
        assert response.headers["Retry-After"] == str(REDIS_RETRY_AFTER_SECONDS)
        assert response.json()["error"] == "redis is unavailable"

    statuses: list[int] = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and statuses[-1:] != [200]:
        response = stack.http.get(path)
        statuses.append(response.status_code)
        time.sleep(0.05)
    assert statuses[-1:] == [200] and set(statuses) <= {200, 503}, f"{statuses}\n{stack.tail()}"
    # Back, with what was written before the kill (AOF), on every connection of the pool.
    assert response.json()["name"] == "kept-across-restart"
    assert [stack.http.get(path).status_code for _ in range(10)] == [200] * 10
    assert stack.http.get("/readyz").status_code == 200
    wait_for(
        lambda: f"redis is running again on 127.0.0.1:{port}" in stack.output.read_text(),
        stack,
        "the console line about the redis restart",
    )
    assert "redis exited with code -9; restarting (1/5)" in stack.output.read_text()
    assert child_pid(stack.process.pid, "redis-server") != pid


def test_killed_broker_is_restarted_on_the_same_port(stack: Stack) -> None:
    port = broker_port(stack)
    pid = child_pid(stack.process.pid, "tansu")

    os.kill(pid, signal.SIGKILL)

    wait_for(
        lambda: f"broker is running again on 127.0.0.1:{port}" in stack.output.read_text(),
        stack,
        "the broker restart",
    )
    assert "broker exited with code -9; restarting (1/5)" in stack.output.read_text()
    assert listening(port)
    assert child_pid(stack.process.pid, "tansu") != pid
