"""Check out one commit of a repository into an empty workspace, with `git` in a container.

Git never runs on the builder itself: it runs in a clone container of the build image, as the
build user, without capabilities or new privileges, under the build's memory, CPU and process
limits and on the build network (as Woodpecker's clone step does). A local repository is the
one folder mounted into it, read-only, at /source, with no network at all (unless the container
is kept for the build's steps: then it is on the build network they need). So a checkout reads
nothing on the host that it was not given and reaches nothing a build could not.

`open_remote` applies the repository-URL policy right before the repository is contacted: the
host is resolved and every fetch is pinned to the checked addresses, so a second DNS answer
cannot send it elsewhere, and without trust redirects are not followed. Git runs without any
configuration but its own, without hooks, with only the transport the remote needs and without
a terminal to prompt on. The URL, with its credentials, is passed to `git fetch` directly and
never stored in the workspace's `.git/config`, so the build steps cannot read it.

A build's checkout (`checkout_with_facts`) also answers, in the same container and usually
the same exec, what the rollback guard needs: where the pushed branch points now and whether
production's commit already contains the one checked out.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote

import docker

from gobuild.builder_agent.ca_trust import NO_EXTRA_TRUST, BuildCaTrust
from gobuild.builder_agent.container import (
    LABEL_STEP,
    ContainerError,
    ExecResult,
    ExecSession,
    PendingRemovals,
    StepSpec,
    count_oom_kills,
    exec_session,
    hand_workspace_to,
)
from gobuild.builder_agent.held_exec import HOLD_SCRIPT, HOLD_START, run_holding
from gobuild.builder_agent.warm_containers import (
    CLEAN_FIRST,
    NO_CLEANING,
    NOT_CLEAN_EXIT,
    Cleaning,
    ContainerNotClean,
)
from gobuild.platform.config import Settings
from gobuild.platform.repo_url import (
    REDACTED,
    InvalidRepoUrl,
    RepoSourcePolicy,
    check_repo_source,
    redact_url,
    with_credentials,
)

__all__ = [
    "CheckoutError",
    "CheckoutFacts",
    "CloneContainer",
    "GitRemote",
    "checkout",
    "checkout_with_facts",
    "commit_in_history",
    "open_remote",
    "redact_url",
    "remote_branch_head",
    "validate_commit_sha",
    "validate_ref_name",
]

log = logging.getLogger(__name__)

_SHA = re.compile(r"^(?:[0-9a-f]{40}|[0-9a-f]{64})$")
# What `git check-ref-format` refuses, applied to a branch name or a full ref.
_REF_FORBIDDEN = re.compile(r"[\x00-\x20\x7f~^:?*\[\\]|\.\.|@\{|//")
_MAX_ERROR_CHARS = 600
_ALL_REFS = ("+refs/heads/*:refs/gobuild/heads/*", "+refs/tags/*:refs/gobuild/tags/*")

# Where a local repository is mounted (read-only) in the clone container.
SOURCE_MOUNT = "/source"
# A local repository belongs to another user than the build user; git refuses to read such a
# repository unless it is named in `safe.directory`, which only the global configuration (not
# `-c`, which git drops for the local transport) may say.
_SOURCE_GIT_CONFIG = "/tmp/gobuild-source.gitconfig"

GIT_ENV = {
    "GIT_TERMINAL_PROMPT": "0",
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_ASKPASS": "/bin/false",
    "SSH_ASKPASS": "/bin/false",
    "GIT_LFS_SKIP_SMUDGE": "1",
    "HOME": "/nonexistent",
    "LC_ALL": "C",
}
GIT_OPTIONS = (
    "-c",
    "protocol.ext.allow=never",
    "-c",
    "core.hooksPath=/dev/null",
    # Nothing is left running in the background once a command returns (the container is
    # removed while the build goes on).
    "-c",
    "gc.auto=0",
    "-c",
    "maintenance.auto=false",
    "-c",
    "advice.detachedHead=false",
    "-c",
    "init.defaultBranch=main",
)


class CheckoutError(RuntimeError):
    """The commit could not be checked out; the message is safe to show in the build log."""


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


# --- Where git runs, and what it may reach ----------------------------------------------------


@dataclass(frozen=True)
class CloneContainer:
    """Where git runs: containers of the build image, as the build user, with limits."""

    client: docker.DockerClient
    image: str
    user: str = "1000:1000"
    network: str = "bridge"
    memory_mb: int = 1024
    cpus: float = 1.0
    pids_limit: int = 256
    labels: Mapping[str, str] = field(default_factory=dict)
    # Who the container's own process runs as, if not `user` (a warm container's: root), and
    # its command, capabilities and writable mounts, if not an idle process's (its keeper's).
    main_user: str | None = None
    main_argv: tuple[str, ...] | None = None
    main_capabilities: tuple[str, ...] = ()
    main_mounts: Mapping[str, str] = field(default_factory=dict)
    # The certificate authorities git trusts besides the image's (GOBUILD_BUILD_CA_BUNDLE).
    ca_trust: BuildCaTrust = NO_EXTRA_TRUST

    @classmethod
    def for_settings(
        cls,
        client: docker.DockerClient,
        settings: Settings,
        labels: Mapping[str, str],
        ca_trust: BuildCaTrust = NO_EXTRA_TRUST,
    ) -> CloneContainer:
        """The build image, user, network, limits and CA trust every build container has."""
        return cls(
            client=client,
            image=settings.build_image,
            user=settings.build_user,
            network=settings.build_network,
            memory_mb=settings.build_memory_mb,
            cpus=settings.build_cpus,
            pids_limit=settings.build_pids_limit,
            labels=labels,
            ca_trust=ca_trust,
        )


@dataclass(frozen=True)
class GitRemote:
    """A repository the policy allowed, as git in a clone container reaches it."""

    # For messages: credentials are `***`.
    shown: str
    container: CloneContainer
    # What git fetches from: the URL with its credentials, or SOURCE_MOUNT.
    fetch_url: str = field(repr=False)
    # A local repository, mounted read-only at SOURCE_MOUNT.
    local_path: Path | None = None
    # `host:port:address,...`: the addresses the policy checked, the only ones git may use.
    pinned: str | None = None
    follow_redirects: bool = False
    # Texts never to show (the credentials, in the forms git might print them).
    secrets: tuple[str, ...] = field(default=(), repr=False)

    def redact(self, text: str) -> str:
        text = redact_url(text)
        for secret in self.secrets:
            text = text.replace(secret, REDACTED)
        return text

    def summarize(self, stderr: bytes) -> str:
        """The last lines git wrote, as one line that is safe to show."""
        text = self.redact(stderr.decode("utf-8", errors="replace"))
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        # git's own progress lines say nothing about the failure.
        useful = [line for line in lines if not line.startswith(("remote: Counting", "From "))]
        summary = " / ".join(useful[-4:]) or "no output"
        return summary[-_MAX_ERROR_CHARS:]


def _secret_forms(userinfo: str | None) -> tuple[str, ...]:
    if not userinfo:
        return ()
    parts = {userinfo, unquote(userinfo), *userinfo.split(":", 1)}
    parts |= {unquote(part) for part in userinfo.split(":", 1)}
    # Longest first, so no part of a secret is left showing after a shorter one was replaced.
    return tuple(sorted((p for p in parts if len(p) >= 4), key=len, reverse=True))


def _local_repository(path: str) -> Path:
    folder = Path(path).resolve()
    if not folder.is_dir():
        raise CheckoutError(f"the local repository {path!r} is not a folder on this builder")
    return folder


async def open_remote(
    repo_url: str,
    *,
    policy: RepoSourcePolicy,
    container: CloneContainer,
    credentials: str | None = None,
) -> GitRemote:
    """The repository at `repo_url`, checked against `policy` now (its host resolved, the
    addresses pinned), with `credentials` (`user:token`) put into the URL git fetches.

    Raises CheckoutError, with a message safe to show, when the policy refuses it.
    """
    shown = redact_url(repo_url)
    try:
        source = await check_repo_source(repo_url, policy, must_resolve=True)
    except InvalidRepoUrl as exc:
        raise CheckoutError(f"refusing to clone {shown[:200]!r}: {exc}") from None
    if source.local_path is not None:
        folder = await asyncio.to_thread(_local_repository, source.local_path)
        return GitRemote(
            shown=shown, container=container, fetch_url=SOURCE_MOUNT, local_path=folder
        )
    return GitRemote(
        shown=shown,
        container=container,
        fetch_url=with_credentials(source.url, credentials) if credentials else source.url,
        pinned=source.curl_resolve(),
        follow_redirects=policy.allows_internal_hosts,
        secrets=_secret_forms(credentials),
    )


class GitSession:
    """git commands, one after another, in one clone container with `folder` at /workspace."""

    def __init__(self, remote: GitRemote, session: ExecSession, deadline: float) -> None:
        self.remote = remote
        self.session = session
        self.deadline = deadline
        local = remote.local_path is not None
        self.env = {
            **remote.container.ca_trust.env,
            **GIT_ENV,
            "GIT_ALLOW_PROTOCOL": "file" if local else "http:https",
            "GIT_CONFIG_GLOBAL": _SOURCE_GIT_CONFIG if local else "/dev/null",
        }
        options: list[str] = []
        if remote.pinned:
            options += ["-c", f"http.curloptResolve={remote.pinned}"]
        if not remote.follow_redirects:
            options += ["-c", "http.followRedirects=false"]
        self.options = tuple(options)

    @property
    def url(self) -> str:
        return self.remote.fetch_url

    async def __call__(self, *args: str, check: bool = True) -> tuple[int, bytes, bytes]:
        """Run `git <args>`; CheckoutError if it fails and `check`, TimeoutError past the
        session's deadline."""
        result = await self._run(["git", *GIT_OPTIONS, *self.options, *args], self.env)
        if check and result.exit_code != 0:
            raise CheckoutError(f"git {args[0]} failed: {self.remote.summarize(result.stderr)}")
        return result.exit_code, result.stdout, result.stderr

    async def script(self, script: str, values: Mapping[str, str]) -> ExecResult:
        """Run the fixed shell `script` with git's options as its arguments ("$@") and
        `values` in its environment: what varies is never part of the shell text."""
        argv = ["sh", "-c", script, "gobuild-git", *GIT_OPTIONS, *self.options]
        return await self._run(argv, {**self.env, **values})

    async def script_holding(self, script: str, values: Mapping[str, str]) -> ExecResult:
        """`script`, asked to hold on for the build's first step once it succeeded (see
        held_exec.py): if it does, the session keeps the held exec (`ExecSession.held`)."""
        argv = ["sh", "-c", script, "gobuild-git", *GIT_OPTIONS, *self.options]
        left = self.deadline - asyncio.get_running_loop().time()
        if left <= 0:
            raise TimeoutError
        result, self.session.held = await run_holding(
            self.session, argv, {**self.env, **values}, left
        )
        return result

    async def _run(self, argv: list[str], env: Mapping[str, str]) -> ExecResult:
        left = self.deadline - asyncio.get_running_loop().time()
        if left <= 0:
            raise TimeoutError
        return await self.session.run(argv, env=env, timeout=left)


def clone_spec(remote: GitRemote, folder: Path, *, purpose: str, kept: bool) -> StepSpec:
    """The clone container for `remote` with `folder` as its workspace. One `kept` for the
    build's steps is on the build network, also for a local repository."""
    container = remote.container
    local = remote.local_path is not None
    return StepSpec(
        image=container.image,
        command="",
        workspace=folder,
        env={},
        memory_mb=container.memory_mb,
        cpus=container.cpus,
        pids_limit=container.pids_limit,
        user=container.user,
        main_user=container.main_user,
        main_argv=container.main_argv,
        main_capabilities=container.main_capabilities,
        main_mounts=container.main_mounts,
        network="none" if local and not kept else container.network,
        labels={**container.labels, LABEL_STEP: purpose},
        name_hint=purpose,
        read_only_mounts={
            **container.ca_trust.mounts,
            **({str(remote.local_path): SOURCE_MOUNT} if local else {}),
        },
    )


@contextlib.asynccontextmanager
async def git_session(
    remote: GitRemote,
    folder: Path,
    *,
    purpose: str,
    timeout: float,
    hand_over: bool = True,
    trust_source: bool = True,
    removals: PendingRemovals | None = None,
    keep: Callable[[ExecSession], None] | None = None,
    warm: ExecSession | None = None,
) -> AsyncIterator[GitSession]:
    """A clone container for `remote` with `folder` (handed to the build user first, unless
    `hand_over` is False) as its workspace; ContainerError becomes CheckoutError.

    For a local repository git is told to trust /source first, unless `trust_source` is False
    (the caller's first command does it). After a block that ends normally the container is
    removed by `removals` in the background, if given, or handed to `keep` (see
    `exec_session`). With `warm` (a running container of `clone_spec`, with `folder` as its
    workspace) git runs there instead, and the container stays."""
    local = remote.local_path is not None
    spec = clone_spec(remote, folder, purpose=purpose, kept=keep is not None)
    deadline = asyncio.get_running_loop().time() + timeout
    try:
        if hand_over:
            await hand_workspace_to(folder, remote.container.user)
        async with contextlib.AsyncExitStack() as stack:
            if warm is None:
                client = remote.container.client
                session = await stack.enter_async_context(
                    exec_session(client, spec, removals=removals, keep=keep)
                )
            else:
                session = warm
            git = GitSession(remote, session, deadline)
            if local and trust_source:
                await git("config", "--global", "safe.directory", SOURCE_MOUNT)
            yield git
    except ContainerError as exc:
        raise CheckoutError(f"the clone container failed: {exc}") from None


# --- Checking out -----------------------------------------------------------------------------


async def _has_commit(git: GitSession, sha: str) -> bool:
    code, _, _ = await git("cat-file", "-e", f"{sha}^{{commit}}", check=False)
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


# Commits of history `commit_in_history` fetches first, and at most (it doubles in between).
_HISTORY_FIRST_DEPTH = 8
HISTORY_DEPTH_LIMIT = 1024


@dataclass(frozen=True)
class CheckoutFacts:
    """What one checkout's git session found out: the commit checked out and, when asked,
    where a branch points on the remote and whether another commit contains this one."""

    commit_sha: str
    # The branch looked up (None: not asked) and its head on the remote right after the
    # fetch (None: the branch does not exist).
    branch: str | None = None
    branch_head: str | None = None
    # The commit asked about (None: not asked) and whether it is `commit_sha` or a descendant
    # of it (None: not decided in the session, e.g. too far apart in history).
    contained_in: str | None = None
    contained: bool | None = None


# The common checkout and its facts in one `docker exec`: each exec costs a runc start
# (~75 ms), and a checkout with its facts used to take ten. The script's text is fixed: the
# values come from its environment and git's options from its arguments ("$@"), so nothing a
# repository or a request names is ever read as shell. Stdout: `commit <sha>`, the lines of
# `ls-remote` (or the line the fetch tells), `contained yes|no|unknown`, or `failed <git
# command>` before exit 1. Exit 3 (_FAST_CHECKOUT_EXIT_FETCH): the first fetch failed and
# nothing else was done (the caller goes the long way). The history for the ancestry question
# goes to the container's /tmp, never into the workspace, and its failures leave the answer
# `unknown`. In a warm container it begins with CLEAN_FIRST, which also prints the memory-kill
# counters (`oom_kill N`) or exits NOT_CLEAN_EXIT.
_FAST_CHECKOUT_EXIT_FETCH = 3
# Where the checkout keeps the branch head it fetched with the commit: one fetch instead of a
# fetch and an `ls-remote` (when the branch is gone, the commit alone is fetched and `ls-remote`
# says so).
HEAD_SEEN_REF = "refs/gobuild/branch-head"
_FAST_CHECKOUT = (
    """
set -u
fail() { printf 'failed %s\\n' "$1"; exit 1; }
"""
    # Asked to hold on for the first step (held_exec.py): its input set aside, and a go.
    + HOLD_START
    # In a warm container: first what an earlier build left is emptied (warm_containers.py).
    + CLEAN_FIRST
    + """
if [ -n "$GOBUILD_SAFE_DIRECTORY" ]; then
  git "$@" config --global safe.directory "$GOBUILD_SAFE_DIRECTORY" || fail config
fi
git "$@" init -q --template= . || fail init
head=
if [ -z "$GOBUILD_DEPTH" ]; then
  git "$@" fetch -q --no-tags "$GOBUILD_URL" "$GOBUILD_WANT" || exit 3
elif [ -n "$GOBUILD_HEAD_REF" ] && git "$@" fetch -q --no-tags "--depth=$GOBUILD_DEPTH" \\
  "$GOBUILD_URL" "$GOBUILD_WANT" "+$GOBUILD_HEAD_REF:$GOBUILD_HEAD_SEEN" 2>/dev/null
then
  # The ref the fetch just wrote, read without starting git again when it is a loose one.
  read -r head 2>/dev/null < ".git/$GOBUILD_HEAD_SEEN" ||
    head=$(git "$@" rev-parse --verify -q "$GOBUILD_HEAD_SEEN") || fail rev-parse
else
  git "$@" fetch -q --no-tags "--depth=$GOBUILD_DEPTH" "$GOBUILD_URL" "$GOBUILD_WANT" || exit 3
fi
git "$@" checkout -q --detach "$GOBUILD_CHECKOUT^{commit}" || fail checkout
commit=$(git "$@" rev-parse HEAD) || fail rev-parse
printf 'commit %s\\n' "$commit"
if [ -n "$head" ]; then
  printf '%s\\t%s\\n' "$head" "$GOBUILD_HEAD_REF"
elif [ -n "$GOBUILD_HEAD_REF" ]; then
  heads=$(git "$@" ls-remote "$GOBUILD_URL" "$GOBUILD_HEAD_REF") || fail ls-remote
  printf '%s\\n' "$heads"
fi
if [ -n "$GOBUILD_CONTAINED_IN" ]; then
  tip=$GOBUILD_CONTAINED_IN
  history=/tmp/gobuild-history
  answer=unknown
  depth=$GOBUILD_HISTORY_DEPTH
  if git "$@" init -q --template= "$history" 2>/dev/null \\
    && git "$@" -C "$history" fetch -q --no-tags "--depth=$depth" "$GOBUILD_URL" "$commit" "$tip" \\
      2>/dev/null
  then
    while :; do
      git "$@" -C "$history" merge-base --is-ancestor "$commit" "$tip" 2>/dev/null
      code=$?
      if [ "$code" -eq 0 ]; then answer=yes; break; fi
      [ "$code" -eq 1 ] || break
      git "$@" -C "$history" merge-base --is-ancestor "$tip" "$commit" 2>/dev/null
      code=$?
      if [ "$code" -eq 0 ]; then answer=no; break; fi
      [ "$code" -eq 1 ] || break
      shallow=$(git "$@" -C "$history" rev-parse --is-shallow-repository 2>/dev/null) || break
      if [ "$shallow" != true ]; then answer=no; break; fi
      [ "$depth" -lt "$GOBUILD_HISTORY_MAX_DEPTH" ] || break
      git "$@" -C "$history" fetch -q --no-tags "--deepen=$depth" "$GOBUILD_URL" "$commit" \\
        "$tip" 2>/dev/null || break
      depth=$((depth * 2))
    done
  fi
  printf 'contained %s\\n' "$answer"
fi
"""
    # Asked to hold on: wait for the build's first step and become it.
    + HOLD_SCRIPT
)
# How far apart, in commits, the checkout's own session looks for the ancestry answer; past
# that the promotion asks `commit_in_history`, which may look much further.
CHECKOUT_HISTORY_DEPTH_LIMIT = 32


def _branch_head(ls_remote: str, ref: str) -> str | None:
    """The commit `ref` points at in `git ls-remote` output; None if it is not there."""
    for line in ls_remote.splitlines():
        sha, _, name = line.partition("\t")
        if name == ref:  # ls-remote also matches refs that merely end with the pattern
            return validate_commit_sha(sha)
    return None


async def checkout(
    remote: GitRemote,
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
    facts = await checkout_with_facts(
        remote, workspace, commit_sha=commit_sha, ref=ref, branch=branch, timeout=timeout
    )
    return facts.commit_sha


async def checkout_with_facts(
    remote: GitRemote,
    workspace: Path,
    *,
    commit_sha: str | None,
    ref: str | None,
    branch: str | None,
    timeout: float,
    head_of: str | None = None,
    contained_in: str | None = None,
    removals: PendingRemovals | None = None,
    keep: Callable[[ExecSession], None] | None = None,
    warm: ExecSession | None = None,
    cleaning: Cleaning | None = None,
    hold: bool = False,
) -> CheckoutFacts:
    """`checkout`, and in the same clone container: the head of branch `head_of` on the
    remote right after the fetch, and whether commit `contained_in` is the checked-out commit
    or a descendant of it. One container and, usually, one exec for all of it; once done the
    container is handed to `keep` if given (for the build's steps), else removed by
    `removals` in the background if given. With `warm`, git runs in that running container
    (see `git_session`), after `cleaning` empties what its earlier build left (else
    ContainerNotClean). With `hold`, a checkout in a container kept for the steps (`keep` or
    `warm`) holds on for the first step in the same exec, kept as the session's `held`.
    """
    sha = validate_commit_sha(commit_sha) if commit_sha else None
    target = _fetch_target(ref, branch)
    if sha is None and target is None:
        raise CheckoutError("nothing to check out: no commit SHA, branch or ref given")
    head_ref = f"refs/heads/{validate_ref_name(head_of)}" if head_of else None
    contained_in = validate_commit_sha(contained_in) if contained_in else None

    if not await asyncio.to_thread(_prepare_empty_folder, workspace):
        raise CheckoutError(f"workspace {workspace} is not empty")
    local = remote.local_path is not None
    async with (
        asyncio.timeout(timeout),
        git_session(
            remote,
            workspace,
            purpose="checkout",
            timeout=timeout,
            trust_source=False,
            removals=removals,
            keep=keep,
            warm=warm,
        ) as git,
    ):
        # Protocol v2 servers hand out any commit by SHA: one shallow fetch of exactly it.
        holding = hold and (keep is not None or warm is not None)
        result = await (git.script_holding if holding else git.script)(
            _FAST_CHECKOUT,
            {
                "GOBUILD_SAFE_DIRECTORY": SOURCE_MOUNT if local else "",
                "GOBUILD_URL": git.url,
                "GOBUILD_WANT": sha or str(target),
                "GOBUILD_DEPTH": "1" if sha else "",
                "GOBUILD_CHECKOUT": sha or "FETCH_HEAD",
                "GOBUILD_HEAD_REF": head_ref or "",
                "GOBUILD_HEAD_SEEN": HEAD_SEEN_REF,
                "GOBUILD_CONTAINED_IN": contained_in or "",
                "GOBUILD_HISTORY_DEPTH": str(_HISTORY_FIRST_DEPTH),
                "GOBUILD_HISTORY_MAX_DEPTH": str(CHECKOUT_HISTORY_DEPTH_LIMIT),
                **(cleaning.values() if cleaning is not None else NO_CLEANING),
            },
        )
        try:
            facts = await _facts_of(
                git, result, sha, target, head_of, head_ref, contained_in, cleaning
            )
        except BaseException:
            git.session.forget_held()
            raise
    if sha is not None and facts.commit_sha != sha:
        git.session.forget_held()
        raise CheckoutError(f"checked out {facts.commit_sha} instead of {sha}")
    return facts


async def _facts_of(
    git: GitSession,
    result: ExecResult,
    sha: str | None,
    target: str | None,
    head_of: str | None,
    head_ref: str | None,
    contained_in: str | None,
    cleaning: Cleaning | None,
) -> CheckoutFacts:
    """What the checkout script found out (the long way, if its first fetch failed)."""
    remote = git.remote
    if cleaning is not None:
        if result.exit_code == NOT_CLEAN_EXIT:
            raise ContainerNotClean(result.stderr.decode("utf-8", "replace").strip())
        # Only kills beyond the earlier builds' are this build's.
        git.session.oom_kills_before = count_oom_kills(result.stdout)
    if result.exit_code != _FAST_CHECKOUT_EXIT_FETCH:
        return _fast_checkout_facts(git, result, head_of, head_ref, contained_in)
    if sha is not None:
        log.info("fetch by SHA refused (%s); fetching the branch", remote.summarize(result.stderr))
    resolved = await _checkout_the_long_way(git, sha, target)
    head = None
    if head_ref is not None:
        _, listed, _ = await git("ls-remote", git.url, head_ref)
        head = _branch_head(listed.decode("utf-8", errors="replace"), head_ref)
    return CheckoutFacts(
        commit_sha=resolved,
        branch=head_of if head_ref else None,
        branch_head=head,
        contained_in=contained_in,
    )


def _fast_checkout_facts(
    git: GitSession,
    result: ExecResult,
    head_of: str | None,
    head_ref: str | None,
    contained_in: str | None,
) -> CheckoutFacts:
    """The facts `_FAST_CHECKOUT` printed; CheckoutError, safe to show, if it failed."""
    lines = result.stdout.decode("utf-8", errors="replace").splitlines()
    if result.exit_code != 0:
        failed = next((line[7:] for line in lines if line.startswith("failed ")), None)
        # No line: not the script's own exit (the shell was killed, out of memory perhaps).
        what = f"git {failed}" if failed else f"the checkout (exit {result.exit_code})"
        raise CheckoutError(f"{what} failed: {git.remote.summarize(result.stderr)}")
    resolved = next((line[7:] for line in lines if line.startswith("commit ")), "")
    answers = {"yes": True, "no": False}
    contained = next(
        (answers.get(line[10:]) for line in lines if line.startswith("contained ")), None
    )
    return CheckoutFacts(
        commit_sha=validate_commit_sha(resolved),
        branch=head_of if head_ref else None,
        branch_head=_branch_head("\n".join(lines), head_ref) if head_ref else None,
        contained_in=contained_in,
        contained=contained if contained_in else None,
    )


async def _checkout_the_long_way(git: GitSession, sha: str | None, target: str | None) -> str:
    """After the first fetch failed in `_FAST_CHECKOUT` (the repository initialized): fetch
    the branch, or every branch and tag, for the commit; the full SHA checked out."""
    if target is None:
        raise CheckoutError(f"cannot fetch commit {sha} and no branch or ref to fetch")
    await git("fetch", "-q", "--no-tags", git.url, target)
    wanted = sha or "FETCH_HEAD"
    if sha is not None and not await _has_commit(git, sha):
        # Not on the branch (any more): look in every branch and tag.
        await git("fetch", "-q", "--no-tags", git.url, *_ALL_REFS)
        if not await _has_commit(git, sha):
            raise CheckoutError(f"commit {sha} is not in the repository")
    await git("checkout", "-q", "--detach", f"{wanted}^{{commit}}")
    _, stdout, _ = await git("rev-parse", "HEAD")
    return stdout.decode().strip()


# --- Asking the repository about its history --------------------------------------------------


async def remote_branch_head(
    remote: GitRemote, branch: str, workspace: Path, *, timeout: float
) -> str | None:
    """The commit `refs/heads/<branch>` points at on the remote now; None if there is no such
    branch. Runs `git ls-remote` in `workspace`, a repository `checkout` made."""
    ref = f"refs/heads/{validate_ref_name(branch)}"
    async with (
        asyncio.timeout(timeout),
        git_session(
            remote, workspace, purpose="ls-remote", timeout=timeout, hand_over=False
        ) as git,
    ):
        _, stdout, _ = await git("ls-remote", git.url, ref)
    return _branch_head(stdout.decode("utf-8", errors="replace"), ref)


async def _is_ancestor(git: GitSession, ancestor: str, descendant: str) -> bool:
    """Whether `ancestor` is in the history of `descendant` that the session's folder holds."""
    code, _, stderr = await git("merge-base", "--is-ancestor", ancestor, descendant, check=False)
    if code not in (0, 1):
        raise CheckoutError(f"git merge-base failed: {git.remote.summarize(stderr)}")
    return code == 0


async def commit_in_history(
    remote: GitRemote,
    commit: str,
    tip: str,
    folder: Path,
    *,
    timeout: float,
    max_depth: int = HISTORY_DEPTH_LIMIT,
) -> bool | None:
    """Whether `commit` is `tip` or one of its ancestors; None when `max_depth` commits of
    history did not settle it.

    Fetches both commits shallowly into the empty `folder` (created; the caller removes it)
    and deepens their history step by step, so only as much is transferred as the answer needs.
    """
    commit, tip = validate_commit_sha(commit), validate_commit_sha(tip)
    if commit == tip:
        return True
    if not await asyncio.to_thread(_prepare_empty_folder, folder):
        raise CheckoutError(f"folder {folder} is not empty")
    fetch = ("fetch", "-q", "--no-tags")
    async with (
        asyncio.timeout(timeout),
        git_session(remote, folder, purpose="history", timeout=timeout) as git,
    ):
        await git("init", "-q", "--template=", ".")
        depth = min(_HISTORY_FIRST_DEPTH, max_depth)
        await git(*fetch, f"--depth={depth}", git.url, commit, tip)
        while True:
            if await _is_ancestor(git, commit, tip):
                return True
            if await _is_ancestor(git, tip, commit):
                return False  # `commit` is the newer one, and history has no cycles
            _, shallow, _ = await git("rev-parse", "--is-shallow-repository")
            if shallow.strip() != b"true":
                return False  # all of both histories is here
            if depth >= max_depth:
                return None
            step = min(depth, max_depth - depth)
            await git(*fetch, f"--deepen={step}", git.url, commit, tip)
            depth += step
