"""Check out one commit of a repository into an empty workspace with the `git` command line.

Git runs isolated from the host's configuration, without hooks, with only http(s) and local
transports allowed and without a terminal to prompt on. The repository URL is passed to
`git fetch` directly and never stored in the workspace's `.git/config`, so credentials in it
do not reach the build container.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
from pathlib import Path

from gobuild.platform.repo_url import GIT_ALLOWED_PROTOCOLS, InvalidRepoUrl, validate_repo_url

log = logging.getLogger(__name__)

_SHA = re.compile(r"^(?:[0-9a-f]{40}|[0-9a-f]{64})$")
_CREDENTIALS = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)[^/@\s]*@")
# What `git check-ref-format` refuses, applied to a branch name or a full ref.
_REF_FORBIDDEN = re.compile(r"[\x00-\x20\x7f~^:?*\[\\]|\.\.|@\{|//")
_MAX_ERROR_CHARS = 600
_ALL_REFS = ("+refs/heads/*:refs/gobuild/heads/*", "+refs/tags/*:refs/gobuild/tags/*")

GIT_ENV = {
    "GIT_TERMINAL_PROMPT": "0",
    "GIT_ALLOW_PROTOCOL": GIT_ALLOWED_PROTOCOLS,
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_CONFIG_GLOBAL": os.devnull,
    "GIT_ASKPASS": "/bin/false",
    "SSH_ASKPASS": "/bin/false",
    "GIT_LFS_SKIP_SMUDGE": "1",
    "LC_ALL": "C",
}
GIT_OPTIONS = (
    "-c",
    "protocol.ext.allow=never",
    "-c",
    "core.hooksPath=/dev/null",
    "-c",
    "advice.detachedHead=false",
    "-c",
    "init.defaultBranch=main",
)


class CheckoutError(RuntimeError):
    """The commit could not be checked out; the message is safe to show in the build log."""


def redact_url(text: str) -> str:
    """Remove `user:token@` from every URL in `text`."""
    return _CREDENTIALS.sub(r"\g<scheme>***@", text)


def validate_commit_sha(sha: str) -> str:
    sha = sha.strip().lower()
    if not _SHA.match(sha):
        raise CheckoutError(f"invalid commit SHA {sha[:80]!r}: expected 40 or 64 hex digits")
    return sha


def validate_ref_name(name: str, *, what: str = "branch") -> str:
    """Apply git's ref-name rules (`git check-ref-format --branch`) without running git."""
    problem = None
    if not name or len(name) > 255:
        problem = "is empty or longer than 255 characters"
    elif name.startswith("-"):
        problem = "starts with '-'"
    elif _REF_FORBIDDEN.search(name):
        problem = "contains a space, a control character, '..', '@{', '//' or one of ~^:?*[\\"
    elif name == "@" or name.startswith("/") or name.endswith(("/", ".")):
        problem = "is '@', starts with '/' or ends with '/' or '.'"
    elif any(part.startswith(".") or part.endswith(".lock") for part in name.split("/")):
        problem = "has a component starting with '.' or ending with '.lock'"
    if problem:
        raise CheckoutError(f"invalid {what} name {name[:80]!r}: it {problem}")
    return name


def _summarize(stderr: bytes) -> str:
    text = redact_url(stderr.decode("utf-8", errors="replace"))
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    # git's own progress lines say nothing about the failure.
    useful = [line for line in lines if not line.startswith(("remote: Counting", "From "))]
    summary = " / ".join(useful[-4:]) or "no output"
    return summary[-_MAX_ERROR_CHARS:]


async def _git(
    workspace: Path, *args: str, timeout: float, check: bool = True
) -> tuple[int, bytes, bytes]:
    """Run one git command in `workspace`; kill it when `timeout` seconds have passed."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": "/nonexistent", **GIT_ENV}
    process = await asyncio.create_subprocess_exec(
        "git",
        *GIT_OPTIONS,
        *args,
        cwd=workspace,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(timeout):
            stdout, stderr = await process.communicate()
    except BaseException:
        # Timeout or cancellation: never leave a git process behind.
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()
        raise
    code = process.returncode or 0
    if check and code != 0:
        raise CheckoutError(f"git {args[0]} failed: {_summarize(stderr)}")
    return code, stdout, stderr


async def _has_commit(workspace: Path, sha: str, timeout: float) -> bool:
    code, _, _ = await _git(
        workspace, "cat-file", "-e", f"{sha}^{{commit}}", timeout=timeout, check=False
    )
    return code == 0


def _prepare_empty_folder(path: Path) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    return not any(path.iterdir())


def _fetch_target(ref: str | None, branch: str | None) -> str | None:
    """The ref to fetch when the SHA alone is not enough (or not given)."""
    if branch:
        return f"refs/heads/{validate_ref_name(branch)}"
    if ref:
        if ref == "HEAD":
            return ref
        validate_ref_name(ref, what="ref")
        return ref if ref.startswith("refs/") else f"refs/heads/{ref}"
    return None


async def checkout(
    repo_url: str,
    workspace: Path,
    *,
    commit_sha: str | None,
    ref: str | None,
    branch: str | None,
    timeout: float,
) -> str:
    """Check out `commit_sha` (or the tip of `branch`/`ref`) into `workspace`; return the full SHA.

    The workspace is created and must be empty. Raises CheckoutError with a message that is
    safe to show (credentials removed); raises TimeoutError when `timeout` passes.
    """
    try:
        url = validate_repo_url(repo_url)
    except InvalidRepoUrl as exc:
        raise CheckoutError(f"refusing to clone {redact_url(repo_url)[:200]!r}: {exc}") from None
    sha = validate_commit_sha(commit_sha) if commit_sha else None
    target = _fetch_target(ref, branch)
    if sha is None and target is None:
        raise CheckoutError("nothing to check out: no commit SHA, branch or ref given")

    if not await asyncio.to_thread(_prepare_empty_folder, workspace):
        raise CheckoutError(f"workspace {workspace} is not empty")
    async with asyncio.timeout(timeout):
        # `--template=` : no sample hooks or other template files in the workspace.
        await _git(workspace, "init", "-q", "--template=", ".", timeout=timeout)
        fetched = False
        if sha is not None:
            # Protocol v2 servers hand out any commit by SHA: one shallow fetch of exactly it.
            code, _, stderr = await _git(
                workspace,
                "fetch",
                "-q",
                "--no-tags",
                "--depth=1",
                url,
                sha,
                timeout=timeout,
                check=False,
            )
            fetched = code == 0
            if not fetched:
                log.info("fetch by SHA refused (%s); fetching the branch", _summarize(stderr))
        if not fetched:
            if target is None:
                raise CheckoutError(f"cannot fetch commit {sha} and no branch or ref to fetch")
            await _git(workspace, "fetch", "-q", "--no-tags", url, target, timeout=timeout)
        wanted = sha or "FETCH_HEAD"
        if sha is not None and not await _has_commit(workspace, sha, timeout):
            # Not on the branch (any more): look in every branch and tag.
            await _git(workspace, "fetch", "-q", "--no-tags", url, *_ALL_REFS, timeout=timeout)
            if not await _has_commit(workspace, sha, timeout):
                raise CheckoutError(f"commit {sha} is not in the repository")
        await _git(workspace, "checkout", "-q", "--detach", f"{wanted}^{{commit}}", timeout=timeout)
        _, stdout, _ = await _git(workspace, "rev-parse", "HEAD", timeout=timeout)
    resolved = stdout.decode().strip()
    if sha is not None and resolved != sha:
        raise CheckoutError(f"checked out {resolved} instead of {sha}")
    return resolved
