"""The whole of GoBuild started the way a user starts it (`gobuild dev`), on free ports."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from gobuild.platform.devstack import free_port
from tests.conftest import WEBHOOK_FIXTURES, GitRepo, git

ADMIN_KEY = "e2e-admin-key"


@dataclass
class Stack:
    """A running `gobuild dev` and a client for its gateway."""

    process: subprocess.Popen[bytes]
    port: int
    data_dir: Path
    output: Path
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
        """A real GitHub push payload, pointed at the local repository and commit."""
        payload = json.loads((WEBHOOK_FIXTURES / "github" / "push-branch-created.json").read_text())
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
        deadline = time.monotonic() + timeout
        build: dict[str, Any] = {}
        while time.monotonic() < deadline:
            build = self.http.get(f"/api/builds/{build_id}").json()
            finished = build["state"] in {"succeeded", "failed", "cancelled", "timed_out"}
            if (
                until == "finished"
                and finished
                and (build["state"] != "succeeded" or build["deployment_url"])
            ):
                return build
            if until == build["state"]:
                return build
            time.sleep(0.1)
        raise AssertionError(
            f"build {build_id} did not finish in {timeout}s: {build}\n{self.tail()}"
        )

    def get_site(self, host_label: str, path: str = "/") -> httpx.Response:
        return httpx.get(
            f"http://127.0.0.1:{self.port}{path}",
            headers={"Host": f"{host_label}.localhost:{self.port}"},
            timeout=10.0,
        )

    def tail(self, lines: int = 60) -> str:
        return "\n".join(self.output.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        self.http.close()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_stack(data_dir: Path, build_image: str, **env_overrides: str) -> Stack:
    port = free_port()
    env = {
        **os.environ,
        "GOBUILD_DATA_DIR": str(data_dir),
        "GOBUILD_ADMIN_API_KEY": ADMIN_KEY,
        "GOBUILD_BUILD_IMAGE": build_image,
        "GOBUILD_GATEWAY_PORT": str(port),
        "GOBUILD_ORCHESTRATOR_PORT": str(orchestrator := free_port()),
        "GOBUILD_STORAGE_PORT": str(storage := free_port()),
        "GOBUILD_ORCHESTRATOR_URL": f"http://127.0.0.1:{orchestrator}",
        "GOBUILD_STORAGE_URL": f"http://127.0.0.1:{storage}",
        "GOBUILD_KAFKA_BOOTSTRAP": f"127.0.0.1:{free_port()}",
        "GOBUILD_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",
        "GOBUILD_BUILD_MEMORY_MB": "512",
        **env_overrides,
    }
    data_dir.mkdir(parents=True, exist_ok=True)
    output = data_dir / "gobuild-dev.out"
    process = subprocess.Popen(
        [sys.executable, "-m", "gobuild.platform.cli", "dev"],
        env=env,
        stdout=output.open("wb"),
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    stack = Stack(process=process, port=port, data_dir=data_dir, output=output)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"gobuild dev exited with {process.returncode}:\n{stack.tail()}")
        if "GoBuild is running" in output.read_text(errors="replace"):
            return stack
        time.sleep(0.2)
    stack.stop()
    raise RuntimeError(f"gobuild dev did not become ready:\n{stack.tail()}")


@contextmanager
def stack_with_repository(build_image: str) -> Iterator[tuple[Stack, GitRepo]]:
    """A `gobuild dev` and an empty local repository to push to, both in a temporary folder
    (for the benchmarks)."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        bare = root / "remote" / "site.git"
        bare.parent.mkdir(parents=True)
        git(bare.parent, "init", "-q", "--bare", "-b", "main", str(bare))
        git(root, "clone", "-q", str(bare), str(root / "work"))
        stack = start_stack(root / "data", build_image)
        try:
            yield stack, GitRepo(bare=bare, work=root / "work")
        finally:
            stack.stop()
