"""Attacks from inside builds, against a real `gobuild dev` (security issue 6, items 3 and 9):
a build cannot flood its log (and with it the broker and storage), build containers cannot
reach each other, a repository cannot run another tenant's image that is on the builder, and a
build leaves nothing in its warm container for the next build of its project (or any other).
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Iterator
from pathlib import Path

import docker
import docker.errors
import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from gobuild.builder_agent.container import ICC_OPTION, LABEL_BUILD_ID
from gobuild.platform.config import Settings
from gobuild.platform.devstack import free_port
from gobuild.platform.events import TOPIC_BUILD_LOGS
from tests.conftest import BUILD_IMAGE, GitRepo
from tests.e2e.stack import Stack, start_stack

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

SECRET = "e2e-webhook-secret-0123456789"
LOG_LIMIT = 1024 * 1024
LINES_PER_SECOND = 200
LINE_BURST = 2000
RETENTION_HOURS = 6
BUILD_NETWORK = Settings.model_fields["build_network"].default
TENANT_IMAGE = "tenant-b/secret:latest"
SITE = "mkdir -p dist; echo '<h1>ok</h1>' > dist/index.html"


@pytest.fixture(scope="module")
def kafka_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, kafka_port: int) -> Iterator[Stack]:
    """`gobuild dev` with small log bounds, two builds at once and local images only."""
    docker.from_env().images.get(BUILD_IMAGE)  # fails clearly if scripts/setup.sh has not run
    running = start_stack(
        tmp_path_factory.mktemp("gobuild"),
        BUILD_IMAGE,
        GOBUILD_KAFKA_BOOTSTRAP=f"127.0.0.1:{kafka_port}",
        GOBUILD_KAFKA_LOG_RETENTION_HOURS=str(RETENTION_HOURS),
        GOBUILD_BUILD_LOG_MAX_BYTES=str(LOG_LIMIT),
        GOBUILD_BUILD_LOG_MAX_LINES_PER_SECOND=str(LINES_PER_SECOND),
        GOBUILD_BUILD_LOG_LINE_BURST=str(LINE_BURST),
        GOBUILD_BUILD_PULL_POLICY="never",
        GOBUILD_BUILDER_CONCURRENCY="2",
    )
    yield running
    running.stop()


def build_commit(stack: Stack, repo: GitRepo, name: str, files: dict[str, str]) -> str:
    """Create project `name` on `repo`, push `files` to it; the id of the build."""
    sha = repo.commit(files, name)
    stack.create_project(name, repo.bare, SECRET)
    response = stack.push_webhook(repo.bare, sha, SECRET)
    assert response.status_code == 202, response.text
    return str(response.json()["build_id"])


def log_of(stack: Stack, build_id: str) -> str:
    return stack.http.get(f"/api/builds/{build_id}/logs").text


def wait_for_line(stack: Stack, build_id: str, pattern: str, timeout: float) -> re.Match[str]:
    """The first log line matching `pattern` whole (the echoed command never does)."""
    deadline = time.monotonic() + timeout
    while True:
        found = re.search(f"^{pattern}$", log_of(stack, build_id), re.MULTILINE)
        if found:
            return found
        assert time.monotonic() < deadline, f"{build_id} never logged {pattern!r}"
        time.sleep(0.2)


def test_a_build_flooding_its_log_is_cut_at_the_limit_once_and_still_succeeds(
    stack: Stack, git_repo: GitRepo
) -> None:
    # 50 MB in lines of 1001 bytes: the size limit, not the line rate, stops it.
    flood = f"""build = '''
yes "$(printf '%01000d' 0)" | head -c 50000000
echo after-the-flood
{SITE}
'''
output = "dist"
"""
    build_id = build_commit(stack, git_repo, "flood", {"gobuild.toml": flood})

    build = stack.wait_for_build(build_id, timeout=240)
    log = log_of(stack, build_id)

    assert build["state"] == "succeeded", f"{build}\n{log[-2000:]}"
    assert LOG_LIMIT * 0.95 < len(log.encode()) < LOG_LIMIT + 16 * 1024
    notice = (
        "Log truncated: this build wrote more than 1 MiB; further output is dropped "
        "(the build goes on)"
    )
    assert log.count(notice) == 1
    assert "after-the-flood" not in log.splitlines()  # written after the limit: dropped
    assert "Step 'build' finished" in log
    assert log.splitlines()[-1].startswith("Build succeeded in ")
    # Storage holds what the log shows, no more.
    stored = sum(path.stat().st_size for path in (stack.data_dir / "logs").rglob(f"{build_id}*"))
    assert LOG_LIMIT * 0.95 < stored < LOG_LIMIT + 64 * 1024


def test_lines_over_the_rate_are_dropped_and_the_log_says_how_many(
    stack: Stack, git_repo: GitRepo
) -> None:
    burst = f"""build = '''
seq 1 20000
sleep 2
echo after-the-burst
{SITE}
'''
output = "dist"
"""
    build_id = build_commit(stack, git_repo, "burst", {"gobuild.toml": burst})

    build = stack.wait_for_build(build_id, timeout=120)
    lines = log_of(stack, build_id).splitlines()

    assert build["state"] == "succeeded", "\n".join(lines[-40:])
    notices = [line for line in lines if line.startswith("Log rate limit:")]
    assert len(notices) == 1, notices
    match = re.fullmatch(
        rf"Log rate limit: dropped (\d+) lines \(this build printed more than "
        rf"{LINES_PER_SECOND} lines per second\)",
        notices[0],
    )
    assert match, notices[0]
    kept = [line for line in lines if line.isdigit()]
    assert kept[:LINE_BURST] == [str(n) for n in range(1, LINE_BURST + 1)]
    assert len(kept) + int(match.group(1)) == 20000
    # The spell ended during the quiet second, before the next line.
    assert lines.index(notices[0]) < lines.index("after-the-burst")


PROBE = """\
import socket
import sys

connection = socket.socket()
connection.settimeout(5)
try:
    connection.connect((sys.argv[1], 8000))
    print("reached-the-other-build")
except OSError as exc:
    print("could-not-reach-the-other-build:", type(exc).__name__)
"""


def test_a_build_cannot_reach_another_running_build(
    stack: Stack, git_repo: GitRepo, docker_client: docker.DockerClient
) -> None:
    network = docker_client.networks.get(BUILD_NETWORK)
    assert network.attrs["Options"][ICC_OPTION] == "false"
    assert network.attrs["Internal"] is False  # builds still reach the package registries

    # Another tenant's build, serving on the build network. It is started directly rather than
    # as a second build, so the test does not depend on which builder slot takes which job.
    other = docker_client.containers.run(
        BUILD_IMAGE,
        ["python3", "-m", "http.server", "8000", "--bind", "0.0.0.0"],
        detach=True,
        network=BUILD_NETWORK,
        user="1000:1000",
        labels={LABEL_BUILD_ID: "b_othertenant"},
    )
    try:
        other.reload()
        address = other.attrs["NetworkSettings"]["Networks"][BUILD_NETWORK]["IPAddress"]
        probe = f"""build = '''
python3 probe.py {address}
python3 probe.py 127.0.0.1
{SITE}
'''
output = "dist"
"""
        probe_build = build_commit(
            stack, git_repo, "attacker", {"gobuild.toml": probe, "probe.py": PROBE}
        )
        build = stack.wait_for_build(probe_build, timeout=120)
        log = log_of(stack, probe_build)
    finally:
        other.remove(force=True)

    assert build["state"] == "succeeded", log
    # The probe ran on the build network (its steps in the clone container).
    assert f"read-only at /source, network {BUILD_NETWORK}" in log
    assert "reached-the-other-build" not in log
    # Its own address answers nothing either (no server there): the probe itself works.
    assert log.count("could-not-reach-the-other-build:") == 2


def test_two_containers_on_the_build_network_cannot_connect_but_could_on_a_shared_one(
    stack: Stack, docker_client: docker.DockerClient
) -> None:
    probe = (
        "import socket, sys\n"
        "s = socket.socket(); s.settimeout(3)\n"
        "try:\n"
        "    s.connect((sys.argv[1], 8000)); print('connected')\n"
        "except OSError as exc:\n"
        "    print('blocked', type(exc).__name__)\n"
    )
    shared = docker_client.networks.create(f"gobuild-test-icc-on-{free_port()}", driver="bridge")
    try:
        outcome: dict[str, str] = {}
        for network in (BUILD_NETWORK, shared.name):
            server = docker_client.containers.run(
                BUILD_IMAGE,
                ["python3", "-m", "http.server", "8000"],
                network=network,
                detach=True,
                remove=True,
            )
            try:
                server.reload()
                address = server.attrs["NetworkSettings"]["Networks"][network]["IPAddress"]
                client_output = docker_client.containers.run(
                    BUILD_IMAGE,
                    ["sh", "-c", f'sleep 1; python3 -c "$0" {address}', probe],
                    network=network,
                    remove=True,
                )
                outcome[network] = client_output.decode().strip()
            finally:
                with contextlib.suppress(docker.errors.APIError):
                    server.remove(force=True)
    finally:
        shared.remove()

    assert outcome == {BUILD_NETWORK: "blocked TimeoutError", shared.name: "connected"}


def test_a_repository_cannot_run_another_tenants_local_image(
    stack: Stack, git_repo: GitRepo, docker_client: docker.DockerClient
) -> None:
    repository, tag = TENANT_IMAGE.split(":")
    docker_client.images.get(BUILD_IMAGE).tag(repository, tag)
    try:
        toml = f"""image = "{TENANT_IMAGE}"
build = "cat /etc/os-release; {SITE}"
output = "dist"
"""
        build_id = build_commit(stack, git_repo, "borrower", {"gobuild.toml": toml})
        build = stack.wait_for_build(build_id, timeout=120)
    finally:
        docker_client.images.remove(TENANT_IMAGE)
    log = log_of(stack, build_id)

    reason = f"image '{TENANT_IMAGE}' is not trusted on this builder; trusted: {BUILD_IMAGE}"
    assert (build["state"], build["reason"]) == ("failed", reason)
    assert f"Build failed: {reason}" in log
    assert "PRETTY_NAME" not in log  # no step ran


async def test_the_build_logs_topic_has_a_retention(stack: Stack, kafka_port: int) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=f"127.0.0.1:{kafka_port}")
    await admin.start()
    try:
        described = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, TOPIC_BUILD_LOGS)]
        )
    finally:
        await admin.close()

    entries = {entry[0]: entry[1] for entry in described[0].resources[0][4]}
    assert entries["retention.ms"] == str(RETENTION_HOURS * 3600 * 1000)
    default_bytes = Settings.model_fields["kafka_log_retention_bytes"].default
    assert entries["retention.bytes"] == str(default_bytes)


# Build 1 leaves a process that, once its step has ended, keeps overwriting the site, and a
# file in /tmp. Its output is packed with that process gone (packing a file while it is
# written fails: "unexpected end of data"), so it succeeds. Build 2 of the same project, in
# the same (warm) container, fails if it finds either, and waits to see whether its own site
# is overwritten.
LEAVER = """build = '''
n=gobuild-tamp; cp /bin/sh /tmp/${n}erer; step=$$
(/tmp/${n}erer -c "while kill -0 $step 2>/dev/null; do sleep 0.01; done
  while :; do echo tampered > dist/index.html; head -c 1000000 /dev/zero > dist/blob; done" \\
  > /dev/null 2>&1 &)
touch /tmp/left-behind
mkdir -p dist; echo "<h1>build one</h1>" > dist/index.html
'''
output = "dist"
"""
FINDS_NOTHING = """build = '''
test ! -e /tmp/left-behind || { echo found-the-file; exit 1; }
! grep -qs "gobuild-tampere[r]" /proc/[0-9]*/cmdline || { echo found-the-process; exit 1; }
mkdir -p dist; echo "<h1>build two</h1>" > dist/index.html; sleep 1
grep -q "build two" dist/index.html || { echo site-overwritten; exit 1; }
'''
output = "dist"
"""


def test_a_build_leaves_nothing_in_its_warm_container_for_the_next_or_another_project(
    stack: Stack, git_repo: GitRepo, tmp_path: Path
) -> None:
    first = build_commit(stack, git_repo, "leaver", {"gobuild.toml": LEAVER})
    assert stack.wait_for_build(first)["state"] == "succeeded", log_of(stack, first)
    project_id = stack.http.get(f"/api/builds/{first}").json()["project_id"]
    kept = f"kept for project {project_id} (1 builds so far)"
    deadline = time.monotonic() + 60
    while kept not in stack.output.read_text(errors="replace"):  # made as good as new first
        assert time.monotonic() < deadline, stack.tail()
        time.sleep(0.2)

    sha = git_repo.commit({"gobuild.toml": FINDS_NOTHING}, "second")
    response = stack.push_webhook(git_repo.bare, sha, SECRET)
    assert response.status_code == 202, response.text
    second = str(response.json()["build_id"])
    build = stack.wait_for_build(second)

    log = log_of(stack, second)
    assert build["state"] == "succeeded", log
    assert "Checking out in a warm container of this project (build 2 in it)" in log
    assert "build two" in stack.get_site("leaver").text
    assert "tampered" not in stack.get_site("leaver").text

    # Another project (same image and limits) never runs in it.
    other_repo = GitRepo.create(tmp_path / "other")
    other = build_commit(stack, other_repo, "bystander", {"gobuild.toml": FINDS_NOTHING})
    build = stack.wait_for_build(other)
    log = log_of(stack, other)
    assert build["state"] == "succeeded", log
    assert "Checking out in a clone container" in log
    assert "warm container" not in log
