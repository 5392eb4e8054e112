"""Old code never replaces newer code on its own: superseded pushes and backwards promotions."""

from __future__ import annotations

import asyncio
from pathlib import Path

import docker
import pytest
import redis.asyncio as aioredis

from gobuild.builder_agent.checkout import (
    CheckoutFacts,
    CloneContainer,
    GitRemote,
    checkout,
    checkout_with_facts,
    open_remote,
)
from gobuild.builder_agent.rollback_guard import (
    branch_to_check,
    production_commit,
    promote_forward,
    superseded_reason,
)
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


def unreachable(remote: GitRemote) -> GitRemote:
    """A remote any contact with which fails: what a guard may use only if it asks nothing."""
    return GitRemote(
        shown="http://127.0.0.1:9/gone.git",
        container=remote.container,
        fetch_url="http://127.0.0.1:9/gone.git",
    )


async def promote(
    records: DeploymentRecords,
    remote: GitRemote,
    candidate: Deployment,
    tmp_path: Path,
    facts: CheckoutFacts | None = None,
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
        facts=facts,
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


async def test_a_push_superseded_between_webhook_and_build_is_skipped_on_the_checkouts_facts(
    git_repo: GitRepo, remote: GitRemote, tmp_path: Path
) -> None:
    old = git_repo.commit({"a.txt": "old"})
    request = build_request("github", old)
    new = git_repo.commit({"a.txt": "new"})  # pushed after the webhook, before the build

    facts = await checkout_with_facts(
        remote,
        tmp_path / "ws",
        commit_sha=old,
        ref=None,
        branch="main",
        timeout=60,
        head_of=branch_to_check(request),
    )

    assert (facts.commit_sha, facts.branch, facts.branch_head) == (old, "main", new)
    # Decided on what the checkout's own session saw: the repository is not asked again.
    reason = await superseded_reason(
        request, unreachable(remote), old, tmp_path / "ws", timeout=30, facts=facts
    )
    assert reason == f"superseded: branch is at {new}"
    gone = CheckoutFacts(commit_sha=old, branch="main", branch_head=None)
    assert await superseded_reason(
        request, unreachable(remote), old, tmp_path / "ws", timeout=30, facts=gone
    ) == ("superseded: branch main no longer exists")
    assert branch_to_check(build_request("api", old)) is None


async def test_the_checkouts_ancestry_answer_keeps_production_forward_without_asking_again(
    redis: aioredis.Redis, git_repo: GitRepo, remote: GitRemote, tmp_path: Path
) -> None:
    old = git_repo.commit({"a.txt": "old"})
    new = git_repo.commit({"a.txt": "new"})
    records = DeploymentRecords(redis)
    await promote(records, remote, deployment(1, new), tmp_path)
    served = await production_commit(records, PROJECT)
    assert served == new

    facts = await checkout_with_facts(
        remote,
        tmp_path / "ws",
        commit_sha=old,
        ref=None,
        branch="main",
        timeout=60,
        contained_in=served,
    )
    assert (facts.contained_in, facts.contained) == (new, True)

    promoted, said = await promote(
        records, unreachable(remote), deployment(2, old), tmp_path, facts
    )
    assert promoted is False
    assert said == [f"Not promoted: production serves {new}, which already contains this commit"]
    alias = await records.production_alias(PROJECT)
    assert alias is not None and alias.deployment_id == "site-1"

    newer = git_repo.commit({"a.txt": "newer"})
    facts = await checkout_with_facts(
        remote,
        tmp_path / "ws2",
        commit_sha=newer,
        ref=None,
        branch="main",
        timeout=60,
        contained_in=new,
    )
    assert facts.contained is False
    promoted, said = await promote(
        records, unreachable(remote), deployment(3, newer), tmp_path, facts
    )
    assert (promoted, said) == (True, [])


async def test_an_alias_moved_after_the_checkout_is_checked_again_before_promoting(
    redis: aioredis.Redis, git_repo: GitRepo, remote: GitRemote, tmp_path: Path
) -> None:
    first = git_repo.commit({"a.txt": "1"})
    second = git_repo.commit({"a.txt": "2"})
    third = git_repo.commit({"a.txt": "3"})
    records = DeploymentRecords(redis)
    await promote(records, remote, deployment(1, first), tmp_path)
    # A rebuild of `second` (build #4) checks out while production serves `first` ...
    facts = await checkout_with_facts(
        remote,
        tmp_path / "ws",
        commit_sha=second,
        ref=None,
        branch="main",
        timeout=60,
        contained_in=await production_commit(records, PROJECT),
    )
    assert (facts.contained_in, facts.contained) == (first, False)
    # ... and build #3 of `third` takes production before #4 promotes.
    assert (await promote(records, remote, deployment(3, third), tmp_path))[0] is True

    promoted, said = await promote(records, remote, deployment(4, second), tmp_path, facts)

    # The higher build number alone would have moved production back to `second`.
    assert promoted is False
    assert said == [f"Not promoted: production serves {third}, which already contains this commit"]
    alias = await records.production_alias(PROJECT)
    assert alias is not None and alias.deployment_id == "site-3"
