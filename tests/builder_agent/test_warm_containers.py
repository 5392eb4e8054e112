"""Warm containers: what a build leaves in one is gone before the next build's checkout runs
git in it (its processes killed by the container's keeper when it is given back, its files and
IPC objects removed by the first lines of that checkout), the build user cannot keep it from
being cleaned, and one that cannot be cleaned is removed. Real containers on the local engine
and real checkouts of a local repository; the agent-level tests are in test_agent.py."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import docker
import docker.errors
import pytest

from gobuild.builder_agent.checkout import (
    CheckoutFacts,
    GitRemote,
    checkout_with_facts,
    clone_spec,
)
from gobuild.builder_agent.container import ExecSession, StepSpec, run_step_in
from gobuild.builder_agent.warm_containers import (
    KEEPER_CAPABILITIES,
    LABEL_WARM,
    MAIN_USER,
    ContainerNotClean,
    WarmContainer,
    WarmContainers,
    WarmKey,
    keeper_status,
    writable_roots,
)
from gobuild.platform.localstack import GitRepo
from gobuild.platform.waiting import wait_within
from tests.builder_agent.local_remote import local_remote
from tests.conftest import BUILD_IMAGE

pytestmark = pytest.mark.timeout(120)

BUILD_USER = "1000:1000"


def test_writable_roots_are_the_topmost_folders_links_left_out_shared_memory_added() -> None:
    scan = "d /tmp\nl /var/lock\nd /tmp/x\nf /tmp/x/y\nd /var/tmp\nd /run/lock\n"
    assert writable_roots(scan) == ("/run/lock", "/tmp", "/var/tmp", "/dev/shm", "/dev/mqueue")


def test_an_image_with_a_file_the_build_user_may_write_is_not_reusable() -> None:
    assert writable_roots("d /tmp\nf /etc/profile\n") is None


@pytest.fixture
async def pool(docker_client: docker.DockerClient, tmp_path: Path) -> AsyncIterator[WarmContainers]:
    builder_id = f"warm-test-{uuid.uuid4().hex[:8]}"
    warm = WarmContainers(
        docker_client, builder_id, tmp_path, keep_seconds=60, max_idle=2, max_uses=3
    )
    try:
        yield warm
    finally:
        await warm.close()
        await warm.remove_leftovers()  # the ones a test never gave back


@pytest.fixture
def sha(git_repo: GitRepo) -> str:
    return git_repo.commit({"index.html": "<h1>hi</h1>"})


@pytest.fixture
async def remote(git_repo: GitRepo, docker_client: docker.DockerClient) -> GitRemote:
    return await local_remote(git_repo, docker_client, main_user=MAIN_USER)


async def start(
    pool: WarmContainers, remote: GitRemote, sha: str, project_id: str = "p_one"
) -> WarmContainer:
    """A new warm container of the project, as a build's checkout starts one."""
    folder = pool.new_folder()
    argv, mounts = pool.keeper(1000, folder)
    container = replace(
        remote.container,
        labels=pool.labels(project_id),
        main_argv=argv,
        main_capabilities=KEEPER_CAPABILITIES,
        main_mounts=mounts,
    )
    remote = replace(remote, container=container)
    kept: list[ExecSession] = []
    await checkout_with_facts(
        remote, folder, commit_sha=sha, ref=None, branch=None, timeout=60, keep=kept.append
    )
    key = WarmKey.of(project_id, clone_spec(remote, folder, purpose="checkout", kept=True))
    return pool.adopt(key, kept[0], folder)


async def sh(warm: WarmContainer, script: str) -> tuple[int, str]:
    result = await warm.session.run(["sh", "-c", script], env={}, timeout=30)
    return result.exit_code, result.stdout.decode() + result.stderr.decode()


async def given_back(pool: WarmContainers, warm: WarmContainer) -> WarmContainer | None:
    """Give it back and take it again (None: it was not kept)."""
    pool.give_back(warm)
    await wait_within(pool.settled(), 60)
    return pool.take(warm.key)


async def check_out_in(warm: WarmContainer, remote: GitRemote, sha: str) -> CheckoutFacts:
    """The next build's checkout in a warm container taken again."""
    return await checkout_with_facts(
        remote,
        warm.folder,
        commit_sha=sha,
        ref=None,
        branch=None,
        timeout=60,
        warm=warm.session,
        cleaning=warm.cleaning,
    )


def removed(client: docker.DockerClient, warm: WarmContainer) -> bool:
    try:
        client.containers.get(warm.session.container.id)
    except docker.errors.NotFound:
        return True
    return False


# Leaves a process (detached: it outlives the exec), files in every place the build user may
# write to, and a System V shared memory segment.
LEAVE_TRACES = """
(sleep 600 > /dev/null 2>&1 &)
(sh -c 'trap "" TERM HUP INT; exec sleep 601' > /dev/null 2>&1 &)
for folder in /tmp /var/tmp /run/lock /dev/shm /workspace; do
  mkdir -p "$folder/nested/deeper" && touch "$folder/.hidden" "$folder/nested/deeper/file"
done
chmod 000 /tmp/nested
ipcmk -M 4096 > /dev/null
"""

# What is left of the build user's: processes other than this shell, the traces above, IPC
# objects.
TRACES = """
for proc in /proc/[0-9]*; do
  [ "${proc#/proc/}" = "$$" ] && continue
  grep -q "^Uid:[[:space:]]*1000[[:space:]]" "$proc/status" 2>/dev/null && echo "process $proc"
done
for folder in /tmp /var/tmp /run/lock /dev/shm /workspace; do
  ls -A "$folder" | grep -E "^(nested|[.]hidden)$" | sed "s|^|$folder/|"
done
tail -n +2 /proc/sysvipc/shm
exit 0
"""


async def test_a_container_given_back_is_as_good_as_new_for_the_next_build(
    pool: WarmContainers, remote: GitRemote, sha: str
) -> None:
    warm = await start(pool, remote, sha)
    code, said = await sh(warm, LEAVE_TRACES)
    assert code == 0, said
    code, said = await sh(warm, TRACES)
    assert "process" in said and "/tmp/.hidden" in said and "/workspace/nested" in said

    again = await given_back(pool, warm)

    # Given back: no process of the build user is left, and the workspace is empty.
    assert again is warm and again.uses == 2
    code, said = await sh(again, TRACES)
    assert "process" not in said and "/workspace" not in said, said
    assert list(again.folder.iterdir()) == []
    # The next build's checkout empties the rest before git runs.
    facts = await check_out_in(again, remote, sha)
    assert facts.commit_sha == sha
    code, said = await sh(again, TRACES)
    assert (code, said) == (0, "")
    assert (again.folder / "index.html").read_text() == "<h1>hi</h1>"


async def test_the_keeper_stops_the_builds_processes_when_its_steps_end_the_folder_waits(
    pool: WarmContainers, remote: GitRemote, sha: str
) -> None:
    warm = await start(pool, remote, sha)
    code, said = await sh(warm, LEAVE_TRACES)
    assert code == 0, said

    # The steps are over; the build packs and uploads its output from here.
    assert await pool.stop_processes(warm)

    # Nothing of the build runs any more, and its files are still there for the upload.
    assert keeper_status(warm.folder) == "clean 1"
    code, said = await sh(warm, TRACES)
    assert "process" not in said and "/workspace/nested" in said, said
    again = await given_back(pool, warm)
    # Given back, the round is not done twice: only the folder was left to empty.
    assert again is warm and keeper_status(warm.folder) == "clean 1"
    assert list(warm.folder.iterdir()) == []


async def test_the_build_user_cannot_stop_the_container_or_its_keeper_or_reach_its_report(
    pool: WarmContainers, remote: GitRemote, sha: str, docker_client: docker.DockerClient
) -> None:
    warm = await start(pool, remote, sha)
    # Everything it may signal: the keeper belongs to root, so the container lives on. Nor
    # may it signal the keeper on its own, or read or forge its report.
    code, said = await sh(
        warm,
        "kill -9 -1; kill -9 1; kill -USR1 1; ls /run/gobuild-keeper"
        " || echo forged > /run/gobuild-keeper/status; exit 0",
    )
    assert code == 0, said
    assert "Permission denied" in said, said
    assert keeper_status(warm.folder) == "ready 0"
    warm.session.container.reload()
    assert warm.session.container.status == "running"
    code, said = await sh(warm, "grep ^CapEff /proc/self/status")
    assert said.split() == ["CapEff:", "0000000000000000"]

    again = await given_back(pool, warm)

    assert again is warm and keeper_status(warm.folder) == "clean 1"
    assert not removed(docker_client, warm)


async def test_a_container_with_a_process_the_keeper_missed_is_not_used_by_the_next_build(
    pool: WarmContainers, remote: GitRemote, sha: str, docker_client: docker.DockerClient
) -> None:
    warm = await start(pool, remote, sha)
    again = await given_back(pool, warm)
    assert again is not None
    # As if a process had outlived the keeper's round (it started after it, here).
    code, said = await sh(again, "(sleep 600 > /dev/null 2>&1 &)")
    assert code == 0, said

    with pytest.raises(ContainerNotClean, match="processes of an earlier build survive"):
        await check_out_in(again, remote, sha)
    assert not any(again.folder.iterdir())  # git never ran


async def test_a_container_killed_during_its_build_is_removed_not_kept(
    pool: WarmContainers, remote: GitRemote, sha: str, docker_client: docker.DockerClient
) -> None:
    warm = await start(pool, remote, sha)
    warm.session.container.kill()  # as a step's deadline or cancel does

    assert await given_back(pool, warm) is None
    assert removed(docker_client, warm)
    assert not warm.folder.exists() and not warm.keeper_folder.exists()


async def test_a_container_serves_at_most_max_uses_builds(
    pool: WarmContainers, remote: GitRemote, sha: str, docker_client: docker.DockerClient
) -> None:
    warm = await start(pool, remote, sha)
    for uses in (2, 3):
        again = await given_back(pool, warm)
        assert again is warm and again.uses == uses
        await check_out_in(again, remote, sha)

    assert await given_back(pool, warm) is None
    assert removed(docker_client, warm)


async def test_a_build_waits_for_a_container_of_its_key_being_given_back_instead_of_a_new_one(
    pool: WarmContainers, remote: GitRemote, sha: str
) -> None:
    warm = await start(pool, remote, sha)
    other = replace(warm.key, project_id="p_two")

    pool.give_back(warm)  # as a build's end does, while the next build of its project starts
    assert pool.take(warm.key) is None  # not clean yet
    assert await pool.take_soon(other) is None  # nothing of that key to wait for

    assert await pool.take_soon(warm.key) is warm
    await check_out_in(warm, remote, sha)


async def test_a_warm_container_goes_only_to_a_build_with_its_key(
    pool: WarmContainers, remote: GitRemote, sha: str
) -> None:
    warm = await start(pool, remote, sha, "p_one")
    pool.give_back(warm)
    await wait_within(pool.settled(), 60)

    other, bigger = replace(warm.key, project_id="p_two"), replace(warm.key, memory_mb=256)
    assert pool.take(other) is None and pool.take(bigger) is None
    assert pool.take(warm.key) is warm


async def test_idle_containers_expire_and_a_restarted_builder_removes_its_leftovers(
    pool: WarmContainers,
    remote: GitRemote,
    sha: str,
    docker_client: docker.DockerClient,
    tmp_path: Path,
) -> None:
    first, second = await start(pool, remote, sha), await start(pool, remote, sha, "p_two")
    pool.give_back(first)
    await wait_within(pool.settled(), 60)
    pool.keep_seconds = 0.2
    await asyncio.sleep(0.3)
    await pool.expire()
    assert pool.idle() == [] and removed(docker_client, first)

    # `second` is as a builder that crashed mid-build leaves it; the next run removes it.
    restarted = WarmContainers(
        docker_client, pool.builder_id, tmp_path, keep_seconds=60, max_idle=2, max_uses=3
    )
    assert await restarted.remove_leftovers() == 1
    assert removed(docker_client, second) and not second.folder.exists()
    assert not second.keeper_folder.exists()
    label = f"{LABEL_WARM}=p_two"
    assert docker_client.containers.list(all=True, filters={"label": label}) == []


async def test_a_memory_kill_of_an_earlier_build_is_not_the_next_builds(
    pool: WarmContainers, remote: GitRemote, sha: str
) -> None:
    warm = await start(pool, remote, sha)
    step = StepSpec(
        image=BUILD_IMAGE,
        command='python3 -c "b = bytearray(512*1024*1024)"',
        workspace=warm.folder,
        user=BUILD_USER,
    )
    lines: list[tuple[str, str]] = []

    async def on_line(stream: str, line: str) -> None:
        lines.append((stream, line))

    result = await run_step_in(warm.session, step, on_line=on_line)
    assert result.oom_killed, lines

    again = await given_back(pool, warm)
    assert again is warm
    await check_out_in(again, remote, sha)  # reads the kills so far
    result = await run_step_in(again.session, replace(step, command="exit 3"), on_line=on_line)
    assert result.exit_code == 3 and not result.oom_killed
