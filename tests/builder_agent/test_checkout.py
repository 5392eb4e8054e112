"""Checking out a commit with git in a clone container: exact commits, branch tips, refused
URLs and names, the repository policy at checkout time, and what the container can see."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from gobuild.builder_agent.checkout import (
    CHECKOUT_HISTORY_DEPTH_LIMIT,
    CheckoutError,
    CloneContainer,
    GitRemote,
    checkout,
    checkout_with_facts,
    commit_in_history,
    open_remote,
    redact_url,
    remote_branch_head,
)
from gobuild.builder_agent.container import (
    LABEL_BUILD_ID,
    ExecSession,
    PendingRemovals,
    StepSpec,
    Stream,
    run_step_in,
)
from gobuild.platform.repo_url import RepoSourcePolicy
from tests.conftest import BUILD_IMAGE, GitRepo, git
from tests.git_http import docker_host_address, repositories_over_http

# A project an instance admin registered, on a builder with GOBUILD_ALLOW_LOCAL_REPOS=true.
ADMIN_LOCAL = RepoSourcePolicy(trusted=True, local_repos_enabled=True)
ADMIN = RepoSourcePolicy(trusted=True)
# A project anyone else registered.
PUBLIC = RepoSourcePolicy(local_repos_enabled=True)


def exists(path: Path) -> bool:
    return path.exists()


def remove(path: Path) -> None:
    path.unlink(missing_ok=True)


@pytest.fixture
def container(docker_client: docker.DockerClient) -> CloneContainer:
    return CloneContainer(
        client=docker_client,
        image=BUILD_IMAGE,
        network="bridge",
        memory_mb=256,
        labels={LABEL_BUILD_ID: "b_checkouttest"},
    )


@pytest.fixture
async def remote(git_repo: GitRepo, container: CloneContainer) -> GitRemote:
    """The test repository, registered by an admin as a local path."""
    return await open_remote(str(git_repo.bare), policy=ADMIN_LOCAL, container=container)


def unopened(url: str, container: CloneContainer) -> GitRemote:
    """A remote that is never contacted (the tests using it fail before git runs)."""
    return GitRemote(shown=url, container=container, fetch_url=url)


async def test_checks_out_the_exact_commit_not_the_branch_tip(
    git_repo: GitRepo, remote: GitRemote, tmp_path: Path
) -> None:
    first = git_repo.commit({"index.html": "first"}, message="first")
    git_repo.commit({"index.html": "second"}, message="second")
    workspace = tmp_path / "ws"

    sha = await checkout(
        remote, workspace, commit_sha=first, ref="refs/heads/main", branch="main", timeout=60
    )

    assert sha == first
    assert (workspace / "index.html").read_text() == "first"


async def test_checks_out_the_branch_tip_when_no_commit_is_given(
    git_repo: GitRepo, remote: GitRemote, tmp_path: Path
) -> None:
    git_repo.commit({"a.txt": "1"})
    tip = git_repo.commit({"a.txt": "2"})

    sha = await checkout(
        remote, tmp_path / "ws", commit_sha=None, ref=None, branch="main", timeout=60
    )

    assert sha == tip


async def test_commit_on_another_branch_is_found(
    git_repo: GitRepo, remote: GitRemote, tmp_path: Path
) -> None:
    git_repo.commit({"a.txt": "main"})
    feature = git_repo.commit({"a.txt": "feature"}, branch="feature")

    sha = await checkout(
        remote, tmp_path / "ws", commit_sha=feature, ref=None, branch="main", timeout=60
    )

    assert sha == feature
    assert (tmp_path / "ws" / "a.txt").read_text() == "feature"


async def test_missing_commit_is_reported(
    git_repo: GitRepo, remote: GitRemote, tmp_path: Path
) -> None:
    git_repo.commit({"a.txt": "1"})

    with pytest.raises(CheckoutError, match="is not in the repository"):
        await checkout(
            remote, tmp_path / "ws", commit_sha="f" * 40, ref=None, branch="main", timeout=60
        )


async def test_workspace_keeps_no_remote_url_for_the_build_to_read(
    git_repo: GitRepo, remote: GitRemote, tmp_path: Path
) -> None:
    sha = git_repo.commit({"a.txt": "1"})

    await checkout(remote, tmp_path / "ws", commit_sha=sha, ref=None, branch="main", timeout=60)

    config = (tmp_path / "ws" / ".git" / "config").read_text()
    assert str(git_repo.bare) not in config
    assert "/source" not in config


async def test_git_runs_as_the_build_user_in_a_container_that_is_removed(
    git_repo: GitRepo,
    remote: GitRemote,
    tmp_path: Path,
    docker_client: docker.DockerClient,
) -> None:
    sha = git_repo.commit({"a.txt": "1"})
    workspace = tmp_path / "ws"

    await checkout(remote, workspace, commit_sha=sha, ref=None, branch="main", timeout=60)

    # Written by git as the build user (the builder itself runs as root here).
    assert {(workspace / name).stat().st_uid for name in ("a.txt", ".git/HEAD")} == {1000}
    label = f"{LABEL_BUILD_ID}=b_checkouttest"
    assert docker_client.containers.list(all=True, filters={"label": label}) == []


async def test_the_clone_container_sees_only_the_repository_it_was_given(
    tmp_path: Path, container: CloneContainer
) -> None:
    """A repository whose objects live in another repository on the host (git alternates):
    git on the host would read that other repository, the clone container cannot."""
    other = tmp_path / "other-tenant.git"
    git(tmp_path, "init", "-q", "--bare", "-b", "main", str(other))
    work = tmp_path / "other-work"
    git(tmp_path, "clone", "-q", str(other), str(work))
    (work / "secret.txt").write_text("another tenant's code")
    git(work, "add", "-A")
    git(work, "commit", "-q", "-m", "secret")
    git(work, "push", "-q", "origin", "main")
    secret = git(work, "rev-parse", "HEAD")
    borrowing = tmp_path / "borrowing.git"
    git(tmp_path, "init", "-q", "--bare", "-b", "main", str(borrowing))
    (borrowing / "objects" / "info" / "alternates").write_text(f"{other / 'objects'}\n")
    git(borrowing, "update-ref", "refs/heads/main", secret)
    assert git(borrowing, "cat-file", "-t", secret) == "commit"  # readable on the host

    remote = await open_remote(str(borrowing), policy=ADMIN_LOCAL, container=container)
    with pytest.raises(CheckoutError) as error:
        await checkout(
            remote, tmp_path / "ws", commit_sha=secret, ref=None, branch="main", timeout=60
        )

    assert not (tmp_path / "ws" / "secret.txt").exists()
    # The other repository's folder does not exist in the clone container.
    assert "unable to normalize alternate object path" in str(error.value)


@pytest.mark.parametrize(
    "url",
    ["ftp://example.com/repo.git", "ext::sh -c touch% /tmp/pwned", "ssh://git@host/repo.git"],
)
async def test_unsafe_repository_urls_are_refused_without_running_anything(
    url: str, tmp_path: Path, container: CloneContainer
) -> None:
    marker = Path("/tmp/pwned")
    remove(marker)

    with pytest.raises(CheckoutError) as error:
        await open_remote(url, policy=ADMIN_LOCAL, container=container)

    assert "refusing to clone" in str(error.value)
    assert "scheme" in str(error.value)
    assert not exists(marker)


@pytest.mark.parametrize(
    "url",
    [
        "/etc",
        "http://127.0.0.1:8080/x.git",
        "http://2130706433/x.git",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]/x.git",
        "http://localhost/x.git",
    ],
)
async def test_a_project_that_is_not_trusted_cannot_reach_the_host_at_checkout(
    url: str, container: CloneContainer
) -> None:
    with pytest.raises(CheckoutError, match="refusing to clone"):
        await open_remote(url, policy=PUBLIC, container=container)


async def test_local_paths_are_refused_at_checkout_while_local_repos_are_off(
    git_repo: GitRepo, container: CloneContainer
) -> None:
    with pytest.raises(CheckoutError, match="GOBUILD_ALLOW_LOCAL_REPOS"):
        await open_remote(str(git_repo.bare), policy=ADMIN, container=container)


@pytest.mark.parametrize(
    "branch", ["-upload-pack=touch /tmp/x", "a..b", "feature branch", "x~1", "ends.lock", "a//b"]
)
async def test_malformed_branch_names_are_refused(
    branch: str, tmp_path: Path, container: CloneContainer
) -> None:
    with pytest.raises(CheckoutError, match="invalid branch name"):
        await checkout(
            unopened("https://example.com/r.git", container),
            tmp_path / "ws",
            commit_sha=None,
            ref=None,
            branch=branch,
            timeout=30,
        )


async def test_malformed_commit_sha_is_refused(tmp_path: Path, container: CloneContainer) -> None:
    with pytest.raises(CheckoutError, match="invalid commit SHA"):
        await checkout(
            unopened("https://example.com/r.git", container),
            tmp_path / "ws",
            commit_sha="HEAD~1; rm",
            ref=None,
            branch="main",
            timeout=30,
        )


async def test_failure_messages_do_not_show_credentials(
    tmp_path: Path, container: CloneContainer
) -> None:
    url = "http://***@127.0.0.1:9/owner/repo.git"
    remote = await open_remote(
        url, policy=ADMIN, container=container, credentials="user:s3cret-token"
    )

    with pytest.raises(CheckoutError) as error:
        await checkout(
            remote, tmp_path / "ws", commit_sha=None, ref=None, branch="main", timeout=60
        )

    assert "git fetch failed" in str(error.value)
    assert "s3cret-token" not in str(error.value)
    assert "s3cret-token" not in repr(remote)
    assert redact_url("http://user:tok@127.0.0.1:9/o/r.git") == "http://***@127.0.0.1:9/o/r.git"


@pytest.fixture
def repository_server(git_repo: GitRepo) -> Iterator[int]:
    """`git_repo.bare` over HTTP, only with Basic auth `user:s3cret-token`."""
    with repositories_over_http(git_repo.bare.parent, "user:s3cret-token") as port:
        yield port


def serve_private_commit(
    git_repo: GitRepo, repository_server: int, docker_client: docker.DockerClient
) -> tuple[str, str]:
    """A new commit of `git_repo`, served by `repository_server`: its SHA, and the URL a clone
    container fetches it from (without the credentials)."""
    tip = git_repo.commit({"index.html": "private"})
    git(git_repo.bare, "update-server-info")
    return tip, f"http://***@{docker_host_address(docker_client)}:{repository_server}/site.git"


async def test_credentials_are_used_for_the_fetch_and_never_stored_in_the_workspace(
    git_repo: GitRepo,
    repository_server: int,
    container: CloneContainer,
    docker_client: docker.DockerClient,
    tmp_path: Path,
) -> None:
    tip, url = serve_private_commit(git_repo, repository_server, docker_client)
    wrong = await open_remote(url, policy=ADMIN, container=container, credentials="user:wrong")
    with pytest.raises(CheckoutError):
        await checkout(
            wrong, tmp_path / "ws1", commit_sha=None, ref=None, branch="main", timeout=60
        )

    remote = await open_remote(
        url, policy=ADMIN, container=container, credentials="user:s3cret-token"
    )
    sha = await checkout(
        remote, tmp_path / "ws2", commit_sha=None, ref=None, branch="main", timeout=60
    )

    assert sha == tip
    assert (tmp_path / "ws2" / "index.html").read_text() == "private"
    for folder, _, files in os.walk(tmp_path / "ws2" / ".git"):
        for name in files:
            assert b"s3cret-token" not in (Path(folder) / name).read_bytes()


# What a step in a kept clone container could read: every file, every process's command line
# and environment (the pattern is spelled so that grep's own command line does not match).
# Then the same grep for what the checkout wrote, to show that it finds things.
SEARCH_FOR_THE_TOKEN = (
    "grep -rls 's3cret-toke[n]' / /proc/[0-9]*/cmdline /proc/[0-9]*/environ "
    "--exclude-dir=proc --exclude-dir=sys 2>/dev/null; echo searched; "
    "grep -rls 'privat[e]' /workspace --exclude-dir=.git 2>/dev/null"
)


async def private_checkout_kept(
    git_repo: GitRepo,
    repository_server: int,
    container: CloneContainer,
    docker_client: docker.DockerClient,
    workspace: Path,
    *,
    hold: bool,
) -> ExecSession:
    """A private repository's checkout, with its credentials, in a container kept for the
    steps."""
    _, url = serve_private_commit(git_repo, repository_server, docker_client)
    remote = await open_remote(
        url, policy=ADMIN, container=container, credentials="user:s3cret-token"
    )
    kept: list[ExecSession] = []
    await checkout_with_facts(
        remote,
        workspace,
        commit_sha=None,
        ref=None,
        branch="main",
        timeout=60,
        keep=kept.append,
        hold=hold,
    )
    [session] = kept
    return session


async def test_a_clone_container_kept_for_the_steps_holds_no_trace_of_the_credentials(
    git_repo: GitRepo,
    repository_server: int,
    container: CloneContainer,
    docker_client: docker.DockerClient,
    tmp_path: Path,
) -> None:
    session = await private_checkout_kept(
        git_repo, repository_server, container, docker_client, tmp_path / "ws", hold=False
    )
    removals = PendingRemovals()
    try:
        result = await session.run(["sh", "-c", SEARCH_FOR_THE_TOKEN], env={}, timeout=120)
    finally:
        session.release(removals)
        await removals.wait()

    assert result.stdout.decode().split() == ["searched", "/workspace/index.html"]
    assert docker_client.containers.list(all=True, filters={"id": session.container.id}) == []


async def test_the_first_step_handed_to_a_held_checkout_finds_no_trace_of_the_credentials(
    git_repo: GitRepo,
    repository_server: int,
    container: CloneContainer,
    docker_client: docker.DockerClient,
    tmp_path: Path,
) -> None:
    session = await private_checkout_kept(
        git_repo, repository_server, container, docker_client, tmp_path / "ws", hold=True
    )
    assert session.held is not None
    lines: list[str] = []

    async def on_line(stream: Stream, line: str) -> None:
        lines.append(line)

    spec = StepSpec(
        image=container.image,
        command=SEARCH_FOR_THE_TOKEN,
        workspace=tmp_path,
        user=container.user,
    )
    removals = PendingRemovals()
    try:
        # The step replaces the checkout's own process, whose environment had them.
        result = await run_step_in(session, spec, on_line=on_line)
    finally:
        session.release(removals)
        await removals.wait()

    assert result.exit_code == 0
    assert lines == ["searched", "/workspace/index.html"]


async def test_the_fetch_connects_only_to_the_address_the_policy_checked(
    git_repo: GitRepo,
    repository_server: int,
    container: CloneContainer,
    docker_client: docker.DockerClient,
    tmp_path: Path,
) -> None:
    """DNS rebinding: git never asks DNS again; `git.invalid` resolves nowhere, so the fetch
    can only have used the pinned address."""
    tip = git_repo.commit({"index.html": "pinned"})
    git(git_repo.bare, "update-server-info")
    address = docker_host_address(docker_client)
    pinned = GitRemote(
        shown="http://***@git.invalid/site.git",
        container=container,
        fetch_url=f"http://user:s3cret-token@git.invalid:{repository_server}/site.git",
        pinned=f"git.invalid:{repository_server}:{address}",
    )

    sha = await checkout(
        pinned, tmp_path / "ws", commit_sha=None, ref=None, branch="main", timeout=60
    )

    assert sha == tip


async def test_remote_branch_head_is_the_tip_now_and_none_for_a_missing_branch(
    git_repo: GitRepo, remote: GitRemote, tmp_path: Path
) -> None:
    first = git_repo.commit({"a.txt": "1"})
    workspace = tmp_path / "ws"
    await checkout(remote, workspace, commit_sha=first, ref=None, branch="main", timeout=60)
    second = git_repo.commit({"a.txt": "2"})
    git_repo.commit({"b.txt": "x"}, branch="release/main")  # also ends with `main`

    assert await remote_branch_head(remote, "main", workspace, timeout=30) == second
    assert await remote_branch_head(remote, "gone", workspace, timeout=30) is None
    with pytest.raises(CheckoutError, match="invalid branch name"):
        await remote_branch_head(remote, "-x", workspace, timeout=30)


async def test_commit_in_history_tells_ancestors_from_newer_commits(
    git_repo: GitRepo, remote: GitRemote, tmp_path: Path
) -> None:
    old = git_repo.commit({"a.txt": "0"})
    for n in range(1, 20):
        git_repo.commit({"a.txt": str(n)})
    tip = git_repo.commit({"a.txt": "tip"})

    # 20 commits apart: more than the first shallow fetch, so the history is deepened.
    assert await commit_in_history(remote, old, tip, tmp_path / "h1", timeout=60) is True
    assert await commit_in_history(remote, tip, old, tmp_path / "h2", timeout=60) is False
    assert await commit_in_history(remote, tip, tip, tmp_path / "h3", timeout=60) is True
    assert (
        await commit_in_history(remote, old, tip, tmp_path / "h4", timeout=60, max_depth=4) is None
    )


async def test_commit_in_history_is_false_for_diverged_lines_once_all_history_is_in(
    git_repo: GitRepo, remote: GitRemote, tmp_path: Path
) -> None:
    base = git_repo.commit({"a.txt": "base"})
    main = git_repo.commit({"a.txt": "main"})
    git(git_repo.work, "checkout", "-q", "-B", "side", base)
    side = git_repo.commit({"b.txt": "side"}, branch="side")

    assert await commit_in_history(remote, side, main, tmp_path / "h1", timeout=60) is False
    assert await commit_in_history(remote, main, side, tmp_path / "h2", timeout=60) is False
    assert await commit_in_history(remote, base, side, tmp_path / "h3", timeout=60) is True


async def test_the_checkouts_container_also_tells_the_branch_head_and_the_ancestry(
    git_repo: GitRepo,
    remote: GitRemote,
    tmp_path: Path,
    docker_client: docker.DockerClient,
) -> None:
    built = git_repo.commit({"a.txt": "built"})
    tip = git_repo.commit({"a.txt": "tip"})
    later = git_repo.commit({"b.txt": "x"}, branch="release/main")  # also ends with `main`
    workspace = tmp_path / "ws"

    facts = await checkout_with_facts(
        remote,
        workspace,
        commit_sha=built,
        ref=None,
        branch="main",
        timeout=60,
        head_of="main",
        contained_in=later,
    )

    assert (facts.commit_sha, facts.branch, facts.branch_head) == (built, "main", tip)
    assert (facts.contained_in, facts.contained) == (later, True)
    assert (workspace / "a.txt").read_text() == "built"
    # The history fetched to answer it stayed in the container, out of the build's workspace,
    # which has the commit and the branch head fetched with it (a build whose commit is not
    # its branch's head stops before any step: `superseded_reason`).
    listed = git(workspace, "-c", "safe.directory=*", "rev-list", "--all")
    assert set(listed.split()) == {built, tip}
    label = f"{LABEL_BUILD_ID}=b_checkouttest"
    assert docker_client.containers.list(all=True, filters={"label": label}) == []

    newer = await checkout_with_facts(
        remote,
        tmp_path / "ws2",
        commit_sha=tip,
        ref=None,
        branch="main",
        timeout=60,
        head_of="gone",
        contained_in=built,
    )
    assert (newer.branch, newer.branch_head, newer.contained) == ("gone", None, False)
    with pytest.raises(CheckoutError, match="invalid branch name"):
        await checkout_with_facts(
            remote,
            tmp_path / "ws3",
            commit_sha=tip,
            ref=None,
            branch="main",
            timeout=30,
            head_of="-x",
        )


async def test_ancestry_too_far_apart_for_the_checkout_is_left_to_commit_in_history(
    git_repo: GitRepo, remote: GitRemote, tmp_path: Path
) -> None:
    old = git_repo.commit({"a.txt": "0"})
    for n in range(1, CHECKOUT_HISTORY_DEPTH_LIMIT + 8):
        git_repo.commit({"a.txt": str(n)})
    tip = git_repo.commit({"a.txt": "tip"})

    facts = await checkout_with_facts(
        remote,
        tmp_path / "ws",
        commit_sha=old,
        ref=None,
        branch="main",
        timeout=60,
        contained_in=tip,
    )

    assert (facts.commit_sha, facts.contained_in, facts.contained) == (old, tip, None)
    assert await commit_in_history(remote, old, tip, tmp_path / "h", timeout=60) is True


async def test_facts_come_the_long_way_when_the_server_cannot_send_one_commit(
    git_repo: GitRepo,
    repository_server: int,
    container: CloneContainer,
    docker_client: docker.DockerClient,
    tmp_path: Path,
) -> None:
    """git's dumb HTTP protocol cannot fetch a single commit shallowly: the branch is fetched."""
    built = git_repo.commit({"index.html": "built"})
    tip = git_repo.commit({"index.html": "tip"})
    git(git_repo.bare, "update-server-info")
    url = f"http://***@{docker_host_address(docker_client)}:{repository_server}/site.git"
    remote = await open_remote(
        url, policy=ADMIN, container=container, credentials="user:s3cret-token"
    )

    facts = await checkout_with_facts(
        remote,
        tmp_path / "ws",
        commit_sha=built,
        ref=None,
        branch="main",
        timeout=60,
        head_of="main",
        contained_in=tip,
    )

    assert (facts.commit_sha, facts.branch_head) == (built, tip)
    assert facts.contained is None  # not decided here: the promotion asks again
    assert (tmp_path / "ws" / "index.html").read_text() == "built"
    for folder, _, files in os.walk(tmp_path / "ws" / ".git"):
        for name in files:
            assert b"s3cret-token" not in (Path(folder) / name).read_bytes()


async def test_a_checkout_cancelled_at_any_moment_leaves_no_clone_container(
    git_repo: GitRepo,
    remote: GitRemote,
    tmp_path: Path,
    docker_client: docker.DockerClient,
) -> None:
    """Cancelled while the engine still creates the container, too (a newer push cancels a
    build that just started)."""
    sha = git_repo.commit({"a.txt": "1"})
    label = f"{LABEL_BUILD_ID}=b_checkouttest"

    for n, delay in enumerate((0.0, 0.005, 0.01, 0.02, 0.04, 0.08, 0.16)):
        task = asyncio.create_task(
            checkout(
                remote, tmp_path / f"ws{n}", commit_sha=sha, ref=None, branch="main", timeout=60
            )
        )
        await asyncio.sleep(delay)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert docker_client.containers.list(all=True, filters={"label": label}) == []
