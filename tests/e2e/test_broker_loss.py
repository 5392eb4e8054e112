"""The embedded broker is SIGKILLed mid-build and comes back empty (it keeps its topics in
memory): every build still ends, what was accepted meanwhile is built, /readyz tells the truth,
and a build nobody holds is cancelled at once. Real git, Docker, broker, Redis, every service.
"""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import httpx
import pytest

from gobuild.platform.devstack import ChildProcess, start_broker
from gobuild.platform.localstack import FINISHED_STATES
from tests.conftest import BUILD_IMAGE, GitRepo
from tests.e2e.stack import Stack, start_stack

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

SECRET = "e2e-webhook-secret-broker-loss"
SLOW_SITE = """\
build = '''
echo "building slowly"
sleep 12
mkdir -p dist
printf '<h1>survived %s</h1>\\n' "$GOBUILD_COMMIT_SHA" > dist/index.html
'''
output = "dist"
"""
# gobuild dev restarts a dead broker after half a second; this test does it itself if not.
BROKER_RESTART_SECONDS = 15.0


@pytest.fixture(scope="module")
def broker_replacements() -> Iterator[list[ChildProcess]]:
    """Brokers this test started itself (when `gobuild dev` did not restart its own)."""
    started: list[ChildProcess] = []
    yield started
    for broker in started:
        broker.stop()


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory, broker_replacements: list[ChildProcess]
) -> Iterator[Stack]:
    docker.from_env().images.get(BUILD_IMAGE)
    running = start_stack(
        tmp_path_factory.mktemp("gobuild"),
        BUILD_IMAGE,
        GOBUILD_RECONCILE_INTERVAL_SECONDS="2",
        GOBUILD_RECONCILE_GRACE_SECONDS="10",
    )
    yield running
    running.stop()


def child_pid(stack: Stack, *needles: str) -> int:
    """The pid of the child of `gobuild dev` whose command line contains every needle."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        if parent == stack.process.pid and all(needle in cmdline for needle in needles):
            return int(entry.name)
    raise AssertionError(f"no child of gobuild dev runs {needles}\n{stack.tail()}")


def listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def broker_port(stack: Stack) -> int:
    return int(stack.env["GOBUILD_KAFKA_BOOTSTRAP"].rsplit(":", 1)[1])


def wait_for_broker(stack: Stack, replacements: list[ChildProcess]) -> None:
    """Wait for `gobuild dev` to restart its broker; start one on its port if it does not."""
    port = broker_port(stack)
    deadline = time.monotonic() + BROKER_RESTART_SECONDS
    while time.monotonic() < deadline:
        if listening(port):
            return
        time.sleep(0.1)
    replacements.append(start_broker(port))


class ReadinessWatch:
    """Polls /readyz in a thread and keeps every (status code, kafka check) it saw."""

    def __init__(self, stack: Stack) -> None:
        self.url = f"http://127.0.0.1:{stack.port}/readyz"
        self.seen: list[tuple[int, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def __enter__(self) -> ReadinessWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _poll(self) -> None:
        with httpx.Client(timeout=10.0) as client:
            while not self._stop.is_set():
                try:
                    response = client.get(self.url)
                    kafka = response.json()["checks"]["kafka"]
                    self.seen.append((response.status_code, kafka))
                except (httpx.HTTPError, ValueError, KeyError):
                    pass
                time.sleep(0.05)

    def ready_again(self) -> bool:
        """It answered 503 for the broker, and 200 after that."""
        down = next((i for i, (code, kafka) in enumerate(self.seen) if code == 503), None)
        return down is not None and any(code == 200 for code, _ in self.seen[down:])


def wait_until(condition: Any, timeout: float, failure: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(failure)
        time.sleep(0.2)


def test_builds_survive_the_broker_being_killed_mid_build(
    stack: Stack, git_repo: GitRepo, broker_replacements: list[ChildProcess]
) -> None:
    sha = git_repo.commit({"gobuild.toml": SLOW_SITE}, "slow")
    project = stack.create_project("lossy", git_repo.bare, SECRET)
    response = stack.push_webhook(git_repo.bare, sha, SECRET)
    assert response.status_code == 202, response.text
    running_id = response.json()["build_id"]
    stack.wait_for_log(running_id, "building slowly", timeout=120)

    with ReadinessWatch(stack) as readiness:
        os.kill(child_pid(stack, "broker", f"127.0.0.1:{broker_port(stack)}"), signal.SIGKILL)
        # Accepted while the broker is down: recorded, answered 202.
        feature_sha = git_repo.commit({"README.md": "feature"}, "f", branch="feature")
        response = stack.push_webhook(git_repo.bare, feature_sha, SECRET, branch="feature")
        assert response.status_code == 202, response.text
        accepted_id = response.json()["build_id"]
        assert stack.http.get(f"/api/builds/{accepted_id}").json()["state"] not in FINISHED_STATES

        wait_for_broker(stack, broker_replacements)
        wait_until(
            readiness.ready_again,
            timeout=90,
            failure=f"/readyz never went 503 then 200: {readiness.seen[-5:]}\n{stack.tail()}",
        )
    assert any(code == 503 and kafka != "ok" for code, kafka in readiness.seen)

    built = stack.wait_for_build(running_id, timeout=240)
    assert built["state"] == "succeeded", built
    page = stack.get_site(built["deployment_id"])
    assert page.status_code == 200 and page.text == f"<h1>survived {sha}</h1>\n"

    accepted = stack.wait_for_build(accepted_id, timeout=240)
    assert accepted["state"] == "succeeded", accepted
    assert stack.get_site(accepted["deployment_id"]).text == f"<h1>survived {feature_sha}</h1>\n"

    builds = stack.http.get(f"/api/projects/{project['id']}/builds").json()["builds"]
    assert {b["state"] for b in builds} == {"succeeded"}, builds


def test_cancel_of_a_build_no_builder_holds_ends_it_at_once(
    stack: Stack, git_repo: GitRepo
) -> None:
    sha = git_repo.commit({"index.html": "<p>never built</p>"}, "never")
    stack.create_project("cancels", git_repo.bare, SECRET)
    builder = child_pid(stack, "gobuild.builder_agent")
    os.kill(builder, signal.SIGSTOP)  # it takes no job, holds no build
    try:
        response = stack.push_webhook(git_repo.bare, sha, SECRET)
        assert response.status_code == 202, response.text
        build_id = response.json()["build_id"]
        stack.wait_for_build(build_id, until="dispatched", timeout=60)

        cancel = stack.http.post(f"/api/builds/{build_id}/cancel")

        assert cancel.status_code == 202, cancel.text
        assert cancel.json()["state"] == "cancelled"
        build = stack.http.get(f"/api/builds/{build_id}").json()
        assert (build["state"], build["reason"]) == ("cancelled", "cancelled before it started")
    finally:
        os.kill(builder, signal.SIGCONT)
    # The builder gets the job when it wakes up, and leaves the cancelled build alone.
    time.sleep(15)
    build = stack.http.get(f"/api/builds/{build_id}").json()
    assert build["state"] == "cancelled" and build["deployment_id"] is None, build
    again = stack.http.post(f"/api/builds/{build_id}/cancel")
    assert again.status_code == 409


def test_builds_dispatched_before_a_full_restart_are_built_after_it(
    tmp_path: Path, git_repo: GitRepo
) -> None:
    """`gobuild dev` stopped while jobs wait on the broker: Redis keeps the builds, the
    embedded broker forgets the jobs; after the restart the orchestrator requests them again."""
    data_dir = tmp_path / "data"
    settings = {"GOBUILD_RECONCILE_INTERVAL_SECONDS": "2", "GOBUILD_RECONCILE_GRACE_SECONDS": "10"}
    # Two slots: the scheduler gives both builds to the (stopped) builder before the restart.
    settings["GOBUILD_BUILDER_CONCURRENCY"] = "2"
    first = start_stack(data_dir, BUILD_IMAGE, **settings)
    try:
        sha = git_repo.commit({"index.html": "<p>after the restart</p>"}, "main")
        feature = git_repo.commit({"index.html": "<p>feature</p>"}, "feature", branch="feature")
        first.create_project("restarts", git_repo.bare, SECRET)
        os.kill(child_pid(first, "gobuild.builder_agent"), signal.SIGSTOP)  # takes no job
        ids = []
        for commit, branch in ((sha, "main"), (feature, "feature")):
            response = first.push_webhook(git_repo.bare, commit, SECRET, branch=branch)
            assert response.status_code == 202, response.text
            ids.append(response.json()["build_id"])
        for build_id in ids:
            first.wait_for_build(build_id, until="dispatched", timeout=60)
    finally:
        first.stop()

    second = start_stack(data_dir, BUILD_IMAGE, **settings)
    try:
        built = [second.wait_for_build(build_id, timeout=240) for build_id in ids]
        assert [b["state"] for b in built] == ["succeeded", "succeeded"], built
        assert second.get_site(built[0]["deployment_id"]).text == "<p>after the restart</p>"
        assert second.get_site(built[1]["deployment_id"]).text == "<p>feature</p>"
    finally:
        second.stop()
