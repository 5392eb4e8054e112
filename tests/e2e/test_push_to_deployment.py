"""A signed push becomes a live deployment: real git, Docker, broker, Redis, every service."""

from __future__ import annotations

import hashlib
import os
import signal
import threading
import time
from pathlib import Path

import docker
import httpx
import pytest

from tests.conftest import GitRepo
from tests.e2e.stack import Stack

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

SECRET = "e2e-webhook-secret-0123456789"
SITE_TOML = """\
build = '''
echo "step one"
echo "step two on stderr" >&2
mkdir -p dist/about
printf '<h1>commit %s</h1>\\n' "$GOBUILD_COMMIT_SHA" > dist/index.html
echo 'body { color: red }' > dist/style.css
echo '<p>about</p>' > dist/about/index.html
echo "step three"
'''
output = "dist"
"""


def test_push_builds_deploys_and_moves_the_production_alias(
    stack: Stack, git_repo: GitRepo
) -> None:
    sha = git_repo.commit({"gobuild.toml": SITE_TOML, "README.md": "site"}, "first")
    project = stack.create_project("site", git_repo.bare, SECRET)

    response = stack.push_webhook(git_repo.bare, sha, SECRET)
    assert response.status_code == 202, response.text
    build_id = response.json()["build_id"]
    build = stack.wait_for_build(build_id)
    assert build["state"] == "succeeded", (
        f"{build}\n{stack.http.get(f'/api/builds/{build_id}/logs').text}"
    )
    assert build["commit_sha"] == sha
    assert build["number"] == 1

    log = stack.http.get(f"/api/builds/{build_id}/logs").text
    steps = [log.index(text) for text in ("step one", "step two on stderr", "step three")]
    assert steps == sorted(steps), log

    artifact = stack.http.get(f"/api/builds/{build_id}/artifact")
    assert artifact.status_code == 200
    digest = hashlib.sha256(artifact.content).hexdigest()
    assert digest == build["artifact"]["sha256"] == artifact.headers["X-Checksum-Sha256"]

    deployment = build["deployment_id"]
    assert build["deployment_url"] == f"http://{deployment}.localhost:{stack.port}/"
    page = stack.get_site(deployment)
    assert page.status_code == 200
    assert page.text == f"<h1>commit {sha}</h1>\n"
    assert page.headers["content-type"].startswith("text/html")
    assert stack.get_site(deployment, "/style.css").headers["content-type"].startswith("text/css")
    assert stack.get_site(deployment, "/about/").text == "<p>about</p>\n"
    assert stack.get_site(deployment, "/missing.html").status_code == 404
    assert stack.get_site("no-such-deployment").status_code == 404
    assert stack.get_site(project["name"]).text == f"<h1>commit {sha}</h1>\n"

    second = git_repo.commit({"README.md": "site v2"}, "second")
    response = stack.push_webhook(git_repo.bare, second, SECRET)
    build2 = stack.wait_for_build(response.json()["build_id"])
    assert build2["state"] == "succeeded" and build2["number"] == 2
    assert stack.get_site(project["name"]).text == f"<h1>commit {second}</h1>\n"
    # The first deployment stays reachable at its own URL.
    assert stack.get_site(deployment).text == f"<h1>commit {sha}</h1>\n"
    shown = stack.http.get(f"/api/projects/{project['id']}").json()
    assert shown["production_deployment_id"] == build2["deployment_id"]


def test_a_feature_branch_deploys_without_touching_production(
    stack: Stack, git_repo: GitRepo
) -> None:
    main = git_repo.commit({"gobuild.toml": SITE_TOML}, "main")
    stack.create_project("branches", git_repo.bare, SECRET)
    stack.wait_for_build(stack.push_webhook(git_repo.bare, main, SECRET).json()["build_id"])
    feature = git_repo.commit({"x.txt": "x"}, "feature", branch="feature")
    build = stack.wait_for_build(
        stack.push_webhook(git_repo.bare, feature, SECRET, branch="feature").json()["build_id"]
    )
    assert build["state"] == "succeeded" and build["production"] is False
    assert stack.get_site(build["deployment_id"]).text == f"<h1>commit {feature}</h1>\n"
    assert stack.get_site("branches").text == f"<h1>commit {main}</h1>\n"


def test_a_failing_step_ends_failed_with_its_log_and_no_deployment(
    stack: Stack, git_repo: GitRepo
) -> None:
    toml = "build = 'echo before-failure && exit 3'\noutput = 'dist'\n"
    sha = git_repo.commit({"gobuild.toml": toml}, "broken")
    stack.create_project("broken", git_repo.bare, SECRET)
    build = stack.wait_for_build(stack.push_webhook(git_repo.bare, sha, SECRET).json()["build_id"])
    assert build["state"] == "failed"
    assert "exited with code 3" in build["reason"]
    assert build["deployment_id"] is None and build["artifact"] is None
    log = stack.http.get(f"/api/builds/{build['id']}/logs").text
    assert "before-failure" in log
    assert stack.get_site("broken").status_code == 404


def test_a_step_past_its_time_limit_ends_timed_out_with_no_container_left(
    stack: Stack, git_repo: GitRepo
) -> None:
    toml = "timeout = 3\nbuild = 'echo sleeping && sleep 60'\noutput = '.'\n"
    sha = git_repo.commit({"gobuild.toml": toml}, "slow")
    stack.create_project("slow", git_repo.bare, SECRET)
    started = time.monotonic()
    build = stack.wait_for_build(stack.push_webhook(git_repo.bare, sha, SECRET).json()["build_id"])
    assert build["state"] == "timed_out", build
    assert time.monotonic() - started < 30
    assert "timed out" in build["reason"]
    leftovers = docker.from_env().containers.list(
        all=True, filters={"label": f"gobuild.build_id={build['id']}"}
    )
    assert leftovers == []


def test_the_log_streams_while_the_build_runs(stack: Stack, git_repo: GitRepo) -> None:
    toml = "build = 'for i in 1 2 3 4 5; do echo tick-$i; sleep 0.6; done'\noutput = '.'\n"
    sha = git_repo.commit({"gobuild.toml": toml, "index.html": "<p>hi</p>"}, "ticks")
    stack.create_project("ticks", git_repo.bare, SECRET)
    build_id = stack.push_webhook(git_repo.bare, sha, SECRET).json()["build_id"]

    arrivals: dict[str, float] = {}
    finished: list[float] = []

    def follow() -> None:
        with httpx.stream(
            "GET",
            f"http://127.0.0.1:{stack.port}/api/builds/{build_id}/logs?follow=1",
            headers={"Authorization": "Bearer e2e-admin-key"},
            timeout=60.0,
        ) as response:
            for line in response.iter_lines():
                if line.startswith("tick-"):
                    arrivals[line] = time.monotonic()
        finished.append(time.monotonic())

    reader = threading.Thread(target=follow)
    reader.start()
    build = stack.wait_for_build(build_id)
    reader.join(30)
    assert build["state"] == "succeeded"
    assert list(arrivals) == [f"tick-{i}" for i in range(1, 6)]
    # Lines arrive as they are printed, not all at once at the end.
    assert arrivals["tick-5"] - arrivals["tick-1"] > 1.5
    assert finished, "the followed log did not end with the build"


def test_redelivered_webhook_and_bad_signature_create_no_build(
    stack: Stack, git_repo: GitRepo
) -> None:
    sha = git_repo.commit({"index.html": "<p>x</p>"}, "x")
    project = stack.create_project("dedupe", git_repo.bare, SECRET)
    first = stack.push_webhook(git_repo.bare, sha, SECRET, delivery="same-delivery")
    again = stack.push_webhook(git_repo.bare, sha, SECRET, delivery="same-delivery")
    forged = stack.push_webhook(git_repo.bare, sha, "forged-secret-000000000000")
    assert (first.status_code, again.status_code, forged.status_code) == (202, 200, 401)
    stack.wait_for_build(first.json()["build_id"])
    builds = stack.http.get(f"/api/projects/{project['id']}/builds").json()["builds"]
    assert [b["id"] for b in builds] == [first.json()["build_id"]]


def _builder_pids(stack: Stack) -> list[int]:
    """The builder agent processes of this stack (found by their command line and data dir)."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().split(b"\0")
            environ = (proc / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if (
            b"gobuild.builder_agent" in cmdline
            and f"GOBUILD_DATA_DIR={stack.data_dir}".encode() in environ
        ):
            pids.append(int(proc.name))
    return pids


def test_a_builder_killed_mid_build_loses_nothing(stack: Stack, git_repo: GitRepo) -> None:
    toml = (
        "build = 'echo started; sleep 5; mkdir -p dist; echo survived > dist/index.html'\n"
        "output = 'dist'\n"
    )
    sha = git_repo.commit({"gobuild.toml": toml}, "survive")
    stack.create_project("survivor", git_repo.bare, SECRET)
    build_id = stack.push_webhook(git_repo.bare, sha, SECRET).json()["build_id"]
    running = stack.wait_for_build(build_id, until="running")
    stack.wait_for_log(build_id, "started")

    [pid] = _builder_pids(stack)
    os.kill(pid, signal.SIGKILL)  # `gobuild dev` restarts it; the build must still finish

    build = stack.wait_for_build(build_id, timeout=150)
    assert build["state"] == "succeeded", build
    assert running["builder_id"] != build["builder_id"]
    assert (running["attempt"], build["attempt"]) == (1, 2)
    assert stack.get_site("survivor").text == "survived\n"
    log = stack.http.get(f"/api/builds/{build_id}/logs").text
    assert "Resuming after builder loss" in log
    leftovers = docker.from_env().containers.list(
        all=True, filters={"label": f"gobuild.build_id={build_id}"}
    )
    assert leftovers == []


def test_a_step_over_its_memory_limit_fails_saying_out_of_memory(
    stack: Stack, git_repo: GitRepo
) -> None:
    toml = "build = '''python3 -c \"b = b'x' * (1024 * 1024 * 1024)\"'''\noutput = '.'\n"
    sha = git_repo.commit({"gobuild.toml": toml, "index.html": "x"}, "hungry")
    stack.create_project("hungry", git_repo.bare, SECRET)
    build = stack.wait_for_build(stack.push_webhook(git_repo.bare, sha, SECRET).json()["build_id"])
    assert build["state"] == "failed"
    assert (
        build["reason"] == "out of memory (limit 512 MiB)"
    )  # GOBUILD_BUILD_MEMORY_MB of the stack
    assert build["deployment_id"] is None


def test_cancelling_a_running_build_stops_it_and_leaves_no_container(
    stack: Stack, git_repo: GitRepo
) -> None:
    toml = "build = 'echo working && sleep 60'\noutput = '.'\n"
    sha = git_repo.commit({"gobuild.toml": toml, "index.html": "x"}, "long")
    stack.create_project("cancelled", git_repo.bare, SECRET)
    build_id = stack.push_webhook(git_repo.bare, sha, SECRET).json()["build_id"]
    stack.wait_for_log(build_id, "working")

    started = time.monotonic()
    response = stack.http.post(f"/api/builds/{build_id}/cancel")
    assert response.status_code == 202
    build = stack.wait_for_build(build_id, timeout=30)
    assert build["state"] == "cancelled", build
    assert time.monotonic() - started < 15  # killed, not waited out
    assert build["deployment_id"] is None
    assert stack.http.post(f"/api/builds/{build_id}/cancel").status_code == 409
    leftovers = docker.from_env().containers.list(
        all=True, filters={"label": f"gobuild.build_id={build_id}"}
    )
    assert leftovers == []
