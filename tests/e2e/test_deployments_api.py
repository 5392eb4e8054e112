"""Deployments, share links and resource samples on the whole stack (`gobuild dev`): promote an
earlier deployment (production pinned), a new push that does not take the pinned alias, un-pin,
redeploy; a share link read without credentials until it is revoked; CPU and memory samples of
a running step on `build-status`."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import docker
import httpx
import pytest

from gobuild.platform.bus import decode_record, make_consumer
from gobuild.platform.config import Settings
from gobuild.platform.devstack import free_port
from gobuild.platform.events import TOPIC_BUILD_STATUS, BuildResourceSample
from tests.conftest import BUILD_IMAGE, GitRepo
from tests.e2e.stack import Stack, start_stack

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(400)]

SECRET = "e2e-webhook-secret-0123456789"
PAGE_TOML = """\
build = '''
mkdir -p dist
printf '<h1>commit %s</h1>\\n' "$GOBUILD_COMMIT_SHA" > dist/index.html
'''
output = "dist"
"""
# About three seconds of work, with some memory held, while the step runs.
SLOW_TOML = """\
build = '''
echo "step begins"
head -c 20000000 /dev/zero | tail -c 1 > /dev/null
for i in 1 2 3 4 5 6; do echo "tick $i"; sleep 0.5; done
mkdir -p dist && echo '<p>slow</p>' > dist/index.html
echo "step ends"
'''
output = "dist"
"""


@pytest.fixture(scope="module")
def kafka_bootstrap_address() -> str:
    return f"127.0.0.1:{free_port()}"


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory, kafka_bootstrap_address: str
) -> Iterator[Stack]:
    """`gobuild dev` as in tests/e2e/conftest.py, with its broker at a known address so the
    test can read `build-status` itself."""
    docker.from_env().images.get(BUILD_IMAGE)
    running = start_stack(
        tmp_path_factory.mktemp("gobuild"),
        BUILD_IMAGE,
        GOBUILD_KAFKA_BOOTSTRAP=kafka_bootstrap_address,
    )
    yield running
    running.stop()


def deploy(stack: Stack, repo: GitRepo, message: str) -> tuple[str, dict]:
    sha = repo.commit({"gobuild.toml": PAGE_TOML, "README.md": message}, message)
    response = stack.push_webhook(repo.bare, sha, SECRET)
    assert response.status_code == 202, response.text
    build = stack.wait_for_build(response.json()["build_id"])
    assert build["state"] == "succeeded", build
    return sha, build


def page(sha: str) -> str:
    return f"<h1>commit {sha}</h1>\n"


def test_promote_pins_production_until_unpinned_and_redeploy_builds_the_commit_again(
    stack: Stack, git_repo: GitRepo
) -> None:
    project = stack.create_project("pinned", git_repo.bare, SECRET)
    first_sha, first = deploy(stack, git_repo, "first")
    second_sha, _ = deploy(stack, git_repo, "second")
    assert stack.get_site("pinned").text == page(second_sha)

    promoted = stack.http.post(f"/api/deployments/{first['deployment_id']}/promote")
    assert promoted.status_code == 200, promoted.text
    assert promoted.json()["pinned"] is True
    assert stack.get_site("pinned").text == page(first_sha)
    shown = stack.http.get(f"/api/projects/{project['id']}").json()
    assert shown["production_pinned"] is True
    assert shown["production_deployment_id"] == first["deployment_id"]

    # A new production push deploys at its own URL and leaves the pinned alias alone.
    third_sha, third = deploy(stack, git_repo, "third")
    assert stack.get_site(third["deployment_id"]).text == page(third_sha)
    assert stack.get_site("pinned").text == page(first_sha)
    history = stack.http.get(f"/api/projects/{project['id']}/deployments").json()
    assert [d["number"] for d in history["deployments"]] == [3, 2, 1]
    assert [d["is_production_alias"] for d in history["deployments"]] == [False, False, True]
    assert history["production"]["following_deployment_id"] == third["deployment_id"]

    unpinned = stack.http.post(f"/api/projects/{project['id']}/production/unpin")
    assert unpinned.status_code == 200, unpinned.text
    assert unpinned.json()["deployment_id"] == third["deployment_id"]
    assert stack.get_site("pinned").text == page(third_sha)
    assert stack.http.get(f"/api/projects/{project['id']}").json()["production_pinned"] is False

    response = stack.http.post(f"/api/builds/{first['id']}/redeploy")
    assert response.status_code == 202, response.text
    again = stack.wait_for_build(response.json()["build_id"])
    assert again["state"] == "succeeded", again
    assert (again["source"], again["commit_sha"], again["number"]) == ("redeploy", first_sha, 4)
    assert again["deployment_id"] != first["deployment_id"]
    assert stack.get_site(again["deployment_id"]).text == page(first_sha)


async def resource_samples(bootstrap: str, build_id: str) -> list[BuildResourceSample]:
    """The resource samples of the build on `build-status`, read from the beginning."""
    settings = Settings(_env_file=None, kafka_bootstrap=bootstrap)  # type: ignore[call-arg]
    consumer = make_consumer(settings, [TOPIC_BUILD_STATUS], None, client_id="e2e-samples")
    await consumer.start()
    samples: list[BuildResourceSample] = []
    try:
        while True:
            batches = await consumer.getmany(timeout_ms=2000)
            if not batches:
                return samples
            for records in batches.values():
                for record in records:
                    event = decode_record(record)
                    if isinstance(event, BuildResourceSample) and event.build_id == build_id:
                        samples.append(event)
    finally:
        await consumer.stop()


def test_a_share_link_reads_the_live_log_without_credentials_until_revoked(
    stack: Stack, git_repo: GitRepo, kafka_bootstrap_address: str
) -> None:
    sha = git_repo.commit({"gobuild.toml": SLOW_TOML}, "slow step")
    stack.create_project("shared", git_repo.bare, SECRET)
    build_id = stack.push_webhook(git_repo.bare, sha, SECRET).json()["build_id"]
    created = stack.http.post(f"/api/builds/{build_id}/share", json={"expires_in": 600})
    assert created.status_code == 201, created.text
    link = created.json()
    shared = f"http://127.0.0.1:{stack.port}/api/shared/{link['token']}"

    # Followed live by someone without an account, until the build ends.
    with httpx.stream("GET", f"{shared}/logs?follow=1", timeout=120.0) as response:
        assert response.status_code == 200
        lines = list(response.iter_lines())
    assert "tick 6" in lines and "step ends" in lines, lines
    build = stack.wait_for_build(build_id)
    assert build["state"] == "succeeded", build
    view = httpx.get(shared, timeout=10).json()
    assert (view["id"], view["state"], view["commit_sha"]) == (build_id, "succeeded", sha)
    assert (
        httpx.get(f"{shared}/artifact", timeout=10).headers["X-Checksum-Sha256"]
        == (build["artifact"]["sha256"])
    )
    # The token is not a credential for anything else.
    assert httpx.get(f"http://127.0.0.1:{stack.port}/api/builds/{build_id}").status_code == 401

    assert stack.http.delete(f"/api/shares/{link['id']}").status_code == 204
    revoked = httpx.get(f"{shared}/logs", timeout=10)
    assert revoked.status_code == 410
    assert revoked.json()["error"] == "share link revoked"

    # The step ran about three seconds: its container's CPU and memory were sampled.
    samples = asyncio.run(resource_samples(kafka_bootstrap_address, build_id))
    assert len(samples) >= 2, samples
    assert {s.step for s in samples} == {"build"}
    assert all(s.memory_limit_bytes == 512 * 1024 * 1024 for s in samples)
    assert all(s.memory_bytes > 0 for s in samples)
    assert build["peak_memory_bytes"] == max(s.memory_bytes for s in samples)
    assert build["peak_cpu_percent"] == max(s.cpu_percent for s in samples)
