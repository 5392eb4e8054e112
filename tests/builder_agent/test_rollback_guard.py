"""Old code never replaces newer code on its own: superseded pushes and backwards promotions."""

from __future__ import annotations

import asyncio
from pathlib import Path

import docker
import pytest
import redis.asyncio as aioredis

from gobuild.builder_agent.checkout import CloneContainer, GitRemote, checkout, open_remote
from gobuild.builder_agent.rollback_guard import promote_forward, superseded_reason
from gobuild.platform.events import BuildConfig, BuildRequested, TriggerSource
from gobuild.platform.records import Deployment
from gobuild.platform.repo_url import RepoSourcePolicy
from gobuild.platform.stores.deployment_records import DeploymentRecords
from tests.conftest import BUILD_IMAGE, GitRepo

PROJECT = "p_guard"


@pytest.fixture
async def remote(git_repo: GitRepo, docker_client: docker.DockerClient) -> GitRemote:
    """The test repository as a project an admin registered as a local path."""
    return await open_remote(
        str(git_repo.bare),
        policy=RepoSourcePolicy(trusted=True, local_repos_enabled=True),
        container=CloneContainer(client=docker_client, image=BUILD_IMAGE, memory_mb=256),
    )


def deployment(number: int, commit_sha: str | None) -> Deployment:
    return Deployment(
        id=f"site-{number}",
        project_id=PROJECT,
        build_id=f"b_{number}",
        number=number,
        branch="main",
        commit_sha=commit_sha,
        url=f"http://site-{number}.localhost/",
    )


async def promote(
    records: DeploymentRecords, remote: GitRemote, candidate: Deployment, tmp_path: Path
) -> tuple[bool, list[str]]:
    """Run the automatic promotion of `candidate`; whether it promoted, and the log lines."""
    said: list[str] = []

    async def say(line: str) -> None:
        said.append(line)

    await records.create(candidate)
    promoted = await promote_forward(
        records,
        candidate,
        remote=remote,
        history_dir=tmp_path / f"{candidate.id}.history",
        deadline=asyncio.get_running_loop().time() + 60,
        say=say,
    )
    assert not (tmp_path / f"{candidate.id}.history").exists()
    return promoted, said


async def test_production_is_not_moved_back_to_a_commit_it_already_contains(
    redis: aioredis.Redis, git_repo: GitRepo, remote: GitRemote, tmp_path: Path
) -> None:
    old = git_repo.commit({"a.txt": "old"})
    new = git_repo.commit({"a.txt": "new"})
    records = DeploymentRecords(redis)
    assert (await promote(records, remote, deployment(1, new), tmp_path))[0] is True

    for candidate in (deployment(2, old), deployment(3, new)):  # an ancestor, the same commit
        promoted, said = await promote(records, remote, candidate, tmp_path)
        assert promoted is False
        assert said == [
            f"Not promoted: production serves {new}, which already contains this commit"
        ]
    alias = await records.production_alias(PROJECT)
    assert alias is not None and (alias.deployment_id, alias.commit_sha) == ("site-1", new)


async def test_a_newer_commit_takes_production_from_its_ancestor(
    redis: aioredis.Redis, git_repo: GitRepo, remote: GitRemote, tmp_path: Path
) -> None:
    old = git_repo.commit({"a.txt": "old"})
    new = git_repo.commit({"a.txt": "new"})
    records = DeploymentRecords(redis)
    await promote(records, remote, deployment(1, old), tmp_path)

    promoted, said = await promote(records, remote, deployment(2, new), tmp_path)

    assert (promoted, said) == (True, [])
    alias = await records.production_alias(PROJECT)
    assert alias is not None and alias.deployment_id == "site-2"


async def test_undecidable_ancestry_falls_back_to_the_build_number_and_says_so(
    redis: aioredis.Redis, git_repo: GitRepo, remote: GitRemote, tmp_path: Path
) -> None:
    sha = git_repo.commit({"a.txt": "x"})
    records = DeploymentRecords(redis)
    await promote(records, remote, deployment(2, None), tmp_path)  # commit never recorded

    promoted, said = await promote(records, remote, deployment(1, sha), tmp_path)
    assert promoted is False
    assert "the commit is not recorded); deciding by build number" in said[0]
    assert said[1] == "Not promoted: production serves build #2, newer than this one"

    promoted, said = await promote(records, remote, deployment(3, sha), tmp_path)
    assert promoted is True and "deciding by build number" in said[0]


async def test_promotion_refuses_when_the_alias_moved_since_it_was_read(
    redis: aioredis.Redis,
) -> None:
    records = DeploymentRecords(redis)
    assert await records.promote_if_newer(deployment(1, None), None) is True
    seen = await records.production_alias(PROJECT)
    assert await records.promote_if_newer(deployment(2, None), seen) is True

    # Decided against build 1, but build 2 took the alias meanwhile: refused.
    assert await records.promote_if_newer(deployment(3, None), seen) is False
    assert await records.promote_if_newer(deployment(4, None), None) is False
    alias = await records.production_alias(PROJECT)
    assert alias is not None and alias.deployment_id == "site-2"


def build_request(source: TriggerSource, sha: str, branch: str = "main") -> BuildRequested:
    return BuildRequested(
        build_id="b_1",
        project_id=PROJECT,
        project_name="site",
        number=1,
        source=source,
        repo_url="",
        ref=f"refs/heads/{branch}",
        branch=branch,
        commit_sha=sha,
        production=True,
        config=BuildConfig(image="i", timeout_seconds=60, memory_mb=64, cpus=1, pids_limit=64),
    )


async def test_a_push_is_superseded_once_its_branch_moved_on_but_an_api_build_is_not(
    git_repo: GitRepo, remote: GitRemote, tmp_path: Path
) -> None:
    old = git_repo.commit({"a.txt": "old"})
    workspace = tmp_path / "ws"
    await checkout(remote, workspace, commit_sha=old, ref=None, branch="main", timeout=60)

    async def reason(source: TriggerSource, sha: str, branch: str = "main") -> str | None:
        request = build_request(source, sha, branch)
        return await superseded_reason(request, remote, sha, workspace, timeout=30)

    assert await reason("github", old) is None
    new = git_repo.commit({"a.txt": "new"})
    assert await reason("github", old) == f"superseded: branch is at {new}"
    assert await reason("gitlab", old) == f"superseded: branch is at {new}"
    assert await reason("github", new) is None
    assert await reason("api", old) is None
    assert await reason("github", old, "gone") == "superseded: branch gone no longer exists"
