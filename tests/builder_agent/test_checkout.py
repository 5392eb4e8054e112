"""Checking out a commit with git: exact commits, branch tips, and refused URLs and names."""

from __future__ import annotations

from pathlib import Path

import pytest

from gobuild.builder_agent.checkout import CheckoutError, checkout, redact_url
from tests.conftest import GitRepo


def exists(path: Path) -> bool:
    return path.exists()


def remove(path: Path) -> None:
    path.unlink(missing_ok=True)


async def test_checks_out_the_exact_commit_not_the_branch_tip(
    git_repo: GitRepo, tmp_path: Path
) -> None:
    first = git_repo.commit({"index.html": "first"}, message="first")
    git_repo.commit({"index.html": "second"}, message="second")
    workspace = tmp_path / "ws"

    sha = await checkout(
        str(git_repo.bare),
        workspace,
        commit_sha=first,
        ref="refs/heads/main",
        branch="main",
        timeout=30,
    )

    assert sha == first
    assert (workspace / "index.html").read_text() == "first"


async def test_checks_out_the_branch_tip_when_no_commit_is_given(
    git_repo: GitRepo, tmp_path: Path
) -> None:
    git_repo.commit({"a.txt": "1"})
    tip = git_repo.commit({"a.txt": "2"})

    sha = await checkout(
        str(git_repo.bare),
        tmp_path / "ws",
        commit_sha=None,
        ref=None,
        branch="main",
        timeout=30,
    )

    assert sha == tip


async def test_commit_on_another_branch_is_found(git_repo: GitRepo, tmp_path: Path) -> None:
    git_repo.commit({"a.txt": "main"})
    feature = git_repo.commit({"a.txt": "feature"}, branch="feature")

    sha = await checkout(
        str(git_repo.bare),
        tmp_path / "ws",
        commit_sha=feature,
        ref=None,
        branch="main",
        timeout=30,
    )

    assert sha == feature
    assert (tmp_path / "ws" / "a.txt").read_text() == "feature"


async def test_missing_commit_is_reported(git_repo: GitRepo, tmp_path: Path) -> None:
    git_repo.commit({"a.txt": "1"})

    with pytest.raises(CheckoutError, match="is not in the repository"):
        await checkout(
            str(git_repo.bare),
            tmp_path / "ws",
            commit_sha="f" * 40,
            ref=None,
            branch="main",
            timeout=30,
        )


async def test_workspace_keeps_no_remote_url_for_the_build_to_read(
    git_repo: GitRepo, tmp_path: Path
) -> None:
    sha = git_repo.commit({"a.txt": "1"})

    await checkout(
        str(git_repo.bare), tmp_path / "ws", commit_sha=sha, ref=None, branch="main", timeout=30
    )

    assert str(git_repo.bare) not in (tmp_path / "ws" / ".git" / "config").read_text()


@pytest.mark.parametrize(
    "url",
    ["ftp://example.com/repo.git", "ext::sh -c touch% /tmp/pwned", "ssh://git@host/repo.git"],
)
async def test_unsafe_repository_urls_are_refused_without_running_anything(
    url: str, tmp_path: Path
) -> None:
    marker = Path("/tmp/pwned")
    remove(marker)
    workspace = tmp_path / "ws"

    with pytest.raises(CheckoutError) as error:
        await checkout(url, workspace, commit_sha=None, ref=None, branch="main", timeout=30)

    assert "refusing to clone" in str(error.value)
    assert "scheme" in str(error.value)
    assert not exists(marker)
    assert not exists(workspace)


@pytest.mark.parametrize(
    "branch", ["-upload-pack=touch /tmp/x", "a..b", "feature branch", "x~1", "ends.lock", "a//b"]
)
async def test_malformed_branch_names_are_refused(branch: str, tmp_path: Path) -> None:
    with pytest.raises(CheckoutError, match="invalid branch name"):
        await checkout(
            "https://example.com/r.git",
            tmp_path / "ws",
            commit_sha=None,
            ref=None,
            branch=branch,
            timeout=30,
        )


async def test_malformed_commit_sha_is_refused(tmp_path: Path) -> None:
    with pytest.raises(CheckoutError, match="invalid commit SHA"):
        await checkout(
            "https://example.com/r.git",
            tmp_path / "ws",
            commit_sha="HEAD~1; rm",
            ref=None,
            branch="main",
            timeout=30,
        )


async def test_failure_messages_do_not_show_credentials(tmp_path: Path) -> None:
    url = "http://user:s3cret-token@127.0.0.1:9/owner/repo.git"

    with pytest.raises(CheckoutError) as error:
        await checkout(url, tmp_path / "ws", commit_sha=None, ref=None, branch="main", timeout=30)

    assert "s3cret-token" not in str(error.value)
    assert redact_url(url) == "http://***@127.0.0.1:9/owner/repo.git"
