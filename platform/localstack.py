"""A whole GoBuild on this machine, started the way a user starts it (`gobuild dev`) on free
ports, builder agents started beside it (for a fleet of several), and local git repositories
to push to: what the end-to-end tests and the benchmarks drive. Nothing here runs in a
deployed installation."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from gobuild.platform.config import ENV_PREFIX, Settings
from gobuild.platform.devstack import free_port, terminate

ADMIN_KEY = "e2e-admin-key"
# The image scripts/setup.sh builds, unless GOBUILD_BUILD_IMAGE names another.
BUILD_IMAGE = os.environ.get(
    f"{ENV_PREFIX}BUILD_IMAGE", Settings.model_fields["build_image"].default
)
FINISHED_STATES = frozenset({"succeeded", "failed", "cancelled", "timed_out"})

GIT_ENV = {
    **os.environ,
    "GIT_AUTHOR_NAME": "Test Author",
    "GIT_AUTHOR_EMAIL": "author@example.com",
    "GIT_COMMITTER_NAME": "Test Author",
    "GIT_COMMITTER_EMAIL": "author@example.com",
}


def git(cwd: Path, *args: str) -> str:
    """Run git in `cwd` with a fixed author; its standard output, stripped."""
    result = subprocess.run(
        ["git", *args], cwd=cwd, check=True, capture_output=True, text=True, env=GIT_ENV
    )
    return result.stdout.strip()


@dataclass
class GitRepo:
    """A bare repository (the 'remote') and a working clone to commit and push from."""

    bare: Path
    work: Path

    @classmethod
    def create(cls, root: Path) -> GitRepo:
        """An empty bare repository `root/remote/site.git` and its clone `root/work`."""
        bare = root / "remote" / "site.git"
        bare.parent.mkdir(parents=True)
        git(bare.parent, "init", "-q", "--bare", "-b", "main", str(bare))
        work = root / "work"
        git(root, "clone", "-q", str(bare), str(work))
        return cls(bare=bare, work=work)

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


def github_push_payload() -> dict[str, Any]:
    """The fields of a GitHub `push` delivery that GoBuild reads; `Stack.push_webhook` fills
    in the ref, commit and repository."""
    return {
        "ref": "refs/heads/main",
        "before": "0" * 40,
        "after": "0" * 40,
        "deleted": False,
        "repository": {"full_name": "local/site", "clone_url": ""},
        "pusher": {"name": "localstack"},
        "head_commit": {"id": "0" * 40, "message": "local push"},
    }


def _poll_until(
    condition: Callable[[], Any], *, timeout: float, interval: float = 0.1, failure: str
) -> Any:
    """Call `condition` until it returns something truthy and return that; raise
    AssertionError with `failure` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise AssertionError(failure)
        time.sleep(interval)


@dataclass
class BuilderAgent:
    """A builder agent started beside `gobuild dev` as a process of its own
    (`python -m gobuild.builder_agent`), with its own id, slots and labels."""

    builder_id: str
    process: subprocess.Popen[bytes]
    output: Path

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.output.read_text(errors="replace").splitlines()[-lines:])

    def kill(self) -> None:
        """SIGKILL: no goodbye, no heartbeat removed, its builds abandoned mid-step."""
        if self.alive:
            self.process.kill()
        self.process.wait()

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM, as an operator stops it; SIGKILL if it has not exited after `timeout`."""
        terminate(self.process, timeout)


@dataclass
class Stack:
    """A running `gobuild dev` and a client for its gateway (signed in as the admin)."""

    process: subprocess.Popen[bytes]
    port: int
    data_dir: Path
    output: Path
    push_payload: dict[str, Any] = field(default_factory=github_push_payload)
    # The GOBUILD_* variables it was started with (its ports, the broker's address, ...).
    env: dict[str, str] = field(default_factory=dict)
    # Builder agents started with `start_builder`, running or not; `stop` stops them too.
    agents: list[BuilderAgent] = field(default_factory=list)
    http: httpx.Client = field(init=False)

    def __post_init__(self) -> None:
        self.http = httpx.Client(
            base_url=f"http://127.0.0.1:{self.port}",
            headers={"Authorization": f"Bearer {ADMIN_KEY}"},
            timeout=30.0,
        )

    def create_project(self, name: str, repo: Path, secret: str, **fields: Any) -> dict[str, Any]:
        body = {"name": name, "repo_url": str(repo), "webhook_secret": secret, **fields}
        response = self.http.post("/api/projects", json=body)
        assert response.status_code == 201, response.text
        return response.json()

    def push_webhook(
        self, repo: Path, sha: str, secret: str, branch: str = "main", delivery: str | None = None
    ) -> httpx.Response:
        """A signed GitHub push delivery (from `push_payload`) for `sha` of the local `repo`."""
        payload = json.loads(json.dumps(self.push_payload))
        payload["ref"] = f"refs/heads/{branch}"
        payload["after"] = sha
        payload["head_commit"]["id"] = sha
        payload["repository"]["clone_url"] = str(repo)
        payload["repository"]["full_name"] = f"local/{repo.name}"
        body = json.dumps(payload).encode()
        signature = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
        return self.http.post(
            "/webhooks/github",
            content=body,
            headers={
                "Content-Type": "application/json",
                "X-GitHub-Event": "push",
                "X-GitHub-Delivery": delivery or os.urandom(8).hex(),
                "X-Hub-Signature-256": signature,
            },
        )

    def wait_for_build(
        self, build_id: str, *, until: str = "finished", timeout: float = 120.0
    ) -> dict[str, Any]:
        """The build once it is in state `until`, or once it finished (a succeeded build
        only once its deployment URL is set)."""
        last: dict[str, Any] = {}

        def reached() -> dict[str, Any] | None:
            last.update(self.http.get(f"/api/builds/{build_id}").json())
            if until == last["state"]:
                return last
            finished = last["state"] in FINISHED_STATES
            deployed = last["state"] != "succeeded" or last["deployment_url"]
            return last if until == "finished" and finished and deployed else None

        failure = f"build {build_id} did not reach {until!r} in {timeout}s"
        try:
            return _poll_until(reached, timeout=timeout, failure=failure)
        except AssertionError:
            raise AssertionError(f"{failure}: {last}\n{self.tail()}") from None

    def wait_for_log(self, build_id: str, text: str, *, timeout: float = 30.0) -> str:
        """The build's log once it contains `text`."""

        def log() -> str | None:
            current = self.http.get(f"/api/builds/{build_id}/logs").text
            return current if text in current else None

        failure = f"build {build_id} never logged {text!r} in {timeout}s\n{self.tail()}"
        return _poll_until(log, timeout=timeout, failure=failure)

    def get_site(self, host_label: str, path: str = "/") -> httpx.Response:
        return httpx.get(
            f"http://127.0.0.1:{self.port}{path}",
            headers={"Host": f"{host_label}.localhost:{self.port}"},
            timeout=10.0,
        )

    def tail(self, lines: int = 60) -> str:
        return "\n".join(self.output.read_text(errors="replace").splitlines()[-lines:])

    # The processes of `gobuild dev` ---------------------------------------------------------

    def child_pids(self) -> list[int]:
        """The processes `gobuild dev` runs: its services, broker and Redis server."""
        pids: list[int] = []
        for children in Path(f"/proc/{self.process.pid}/task").glob("*/children"):
            try:
                pids += [int(pid) for pid in children.read_text().split()]
            except OSError:
                continue
        return pids

    def child_pid(self, *needles: str) -> int:
        """The pid of the child of `gobuild dev` whose command line contains every needle."""
        for pid in self.child_pids():
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
            except OSError:
                continue
            if all(needle.encode() in cmdline for needle in needles):
                return pid
        raise AssertionError(f"no child of gobuild dev runs {needles}\n{self.tail()}")

    def service_env(self) -> dict[str, str]:
        """The environment `gobuild dev` gives its services (the Redis URL with its password,
        the internal token, ...), read from its orchestrator process."""
        pid = self.child_pid("gobuild.platform.orchestrator")
        raw = Path(f"/proc/{pid}/environ").read_bytes()
        pairs = (item.split(b"=", 1) for item in raw.split(b"\0") if b"=" in item)
        return {key.decode(): value.decode(errors="replace") for key, value in pairs}

    # Builder agents of its own --------------------------------------------------------------

    def start_builder(
        self,
        builder_id: str,
        *,
        concurrency: int = 1,
        labels: tuple[str, ...] = (),
        wait: bool = True,
        **env_overrides: str,
    ) -> BuilderAgent:
        """Start `python -m gobuild.builder_agent` with the services' environment and this id,
        number of slots and labels; with `wait`, returns once it is ready (`wait_for_builder`).
        """
        env = {
            **self.service_env(),
            "GOBUILD_BUILDER_ID": builder_id,
            "GOBUILD_BUILDER_CONCURRENCY": str(concurrency),
            "GOBUILD_BUILDER_LABELS": ",".join(labels),
            **env_overrides,
        }
        output = self.data_dir / f"builder-{builder_id}.out"
        with output.open("ab") as out:
            process = subprocess.Popen(
                [sys.executable, "-m", "gobuild.builder_agent"],
                cwd=self.data_dir,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        agent = BuilderAgent(builder_id, process, output)
        self.agents.append(agent)
        if wait:
            self.wait_for_builder(agent)
        return agent

    def wait_for_builder(self, agent: BuilderAgent, timeout: float = 60.0) -> None:
        """Until the agent logged that it started and, where the gateway lists builders,
        `GET /api/builders` shows it online; stops it and raises if it does not get there."""

        def ready() -> bool:
            if not agent.alive:
                raise RuntimeError(f"builder {agent.builder_id} exited:\n{agent.tail()}")
            started = f"builder {agent.builder_id} started"
            if started not in agent.output.read_text(errors="replace"):
                return False
            return self.builder_online(agent.builder_id) is not False

        try:
            _poll_until(ready, timeout=timeout, interval=0.2, failure="not ready")
        except AssertionError:
            agent.stop()
            raise RuntimeError(
                f"builder {agent.builder_id} not ready in {timeout}s:\n{agent.tail()}"
            ) from None

    def builders(self) -> list[dict[str, Any]] | None:
        """`GET /api/builders` (online and lost builders); None if the gateway has no such
        route."""
        response = self.http.get("/api/builders")
        if response.status_code in (404, 405):
            return None
        response.raise_for_status()
        return list(response.json()["builders"])

    def builder_online(self, builder_id: str) -> bool | None:
        """Whether `GET /api/builders` shows the builder online; None if there is no such
        route."""
        builders = self.builders()
        if builders is None:
            return None
        return any(b["id"] == builder_id and b.get("state") == "online" for b in builders)

    def stop_builders(self) -> None:
        """Stop (SIGTERM) every builder agent `start_builder` started."""
        for agent in self.agents:
            agent.stop()
        self.agents.clear()

    # The broker -----------------------------------------------------------------------------

    @property
    def broker_port(self) -> int:
        return int(self.env["GOBUILD_KAFKA_BOOTSTRAP"].rsplit(":", 1)[1])

    def broker_pid(self) -> int:
        return self.child_pid("broker", f"127.0.0.1:{self.broker_port}")

    def kill_broker(self) -> int:
        """SIGKILL the embedded broker; `gobuild dev` starts a new one on the same port, empty
        (the broker keeps its topics in memory). Returns the killed one's pid."""
        pid = self.broker_pid()
        os.kill(pid, signal.SIGKILL)
        return pid

    def wait_for_broker(self, old_pid: int, timeout: float = 30.0) -> int:
        """The pid of the broker `gobuild dev` started in place of `old_pid`, once it listens."""

        def restarted() -> int | None:
            try:
                pid = self.broker_pid()
            except AssertionError:
                return None
            if pid == old_pid:
                return None
            with socket.socket() as probe:
                probe.settimeout(0.5)
                if probe.connect_ex(("127.0.0.1", self.broker_port)) != 0:
                    return None
            return pid

        failure = f"gobuild dev did not restart its broker in {timeout}s\n{self.tail()}"
        return _poll_until(restarted, timeout=timeout, interval=0.1, failure=failure)

    def stop(self) -> None:
        self.stop_builders()
        self.http.close()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_stack(
    data_dir: Path,
    build_image: str,
    *,
    push_payload: dict[str, Any] | None = None,
    **env_overrides: str,
) -> Stack:
    """Start `gobuild dev` on free ports with its data (and working directory, so no stray
    `.env` is read) in `data_dir`; returns once it printed that it is running."""
    port = free_port()
    orchestrator, storage = free_port(), free_port()
    env = {
        **os.environ,
        "GOBUILD_DATA_DIR": str(data_dir),
        "GOBUILD_ADMIN_API_KEY": ADMIN_KEY,
        "GOBUILD_BUILD_IMAGE": build_image,
        "GOBUILD_GATEWAY_PORT": str(port),
        "GOBUILD_ORCHESTRATOR_PORT": str(orchestrator),
        "GOBUILD_STORAGE_PORT": str(storage),
        "GOBUILD_DASHBOARD_PORT": str(free_port()),
        "GOBUILD_NOTIFICATIONS_PORT": str(free_port()),
        "GOBUILD_RETENTION_PORT": str(free_port()),
        "GOBUILD_ORCHESTRATOR_URL": f"http://127.0.0.1:{orchestrator}",
        "GOBUILD_STORAGE_URL": f"http://127.0.0.1:{storage}",
        "GOBUILD_KAFKA_BOOTSTRAP": f"127.0.0.1:{free_port()}",
        "GOBUILD_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",
        "GOBUILD_BUILD_MEMORY_MB": "512",
        **env_overrides,
    }
    data_dir.mkdir(parents=True, exist_ok=True)
    output = data_dir / "gobuild-dev.out"
    with output.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "gobuild.platform.cli", "dev"],
            cwd=data_dir,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    settings_env = {k: v for k, v in env.items() if k.startswith(ENV_PREFIX)}
    stack = Stack(process=process, port=port, data_dir=data_dir, output=output, env=settings_env)
    if push_payload is not None:
        stack.push_payload = push_payload

    def running() -> bool:
        if process.poll() is not None:
            raise RuntimeError(f"gobuild dev exited with {process.returncode}:\n{stack.tail()}")
        return "GoBuild is running" in output.read_text(errors="replace")

    try:
        _poll_until(running, timeout=90, interval=0.2, failure="gobuild dev did not become ready")
    except AssertionError:
        stack.stop()
        raise RuntimeError(f"gobuild dev did not become ready:\n{stack.tail()}") from None
    return stack


@contextmanager
def stack_with_repository(build_image: str) -> Iterator[tuple[Stack, GitRepo]]:
    """A `gobuild dev` and an empty local repository to push to, both in a temporary folder."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        repo = GitRepo.create(root)
        stack = start_stack(root / "data", build_image)
        try:
            yield stack, repo
        finally:
            stack.stop()
