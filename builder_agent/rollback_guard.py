"""Old code never replaces newer code on its own: a pushed commit is built only while it is its
branch's head (so a replayed or late delivery builds nothing), and the automatic promotion never
moves production to a commit that production already contains.

Both questions are usually answered by the checkout's own git session (`CheckoutFacts`); the
repository is asked again only when those facts do not cover the question (the alias moved to
another commit after the checkout, or the history was too long to settle it there)."""

from __future__ import annotations

import asyncio
import logging
import shutil
from collections.abc import Awaitable, Callable
from pathlib import Path

from gobuild.builder_agent.checkout import (
    CheckoutError,
    CheckoutFacts,
    GitRemote,
    commit_in_history,
    remote_branch_head,
)
from gobuild.platform.events import BuildRequested, TriggerSource
from gobuild.platform.records import Deployment, ProductionAlias
from gobuild.platform.stores.deployment_records import DeploymentRecords

log = logging.getLogger(__name__)

PUSH_SOURCES: frozenset[TriggerSource] = frozenset({"github", "gitlab"})
# How often the promotion decides again when another build moved the alias meanwhile.
_PROMOTE_ATTEMPTS = 3


def branch_to_check(request: BuildRequested) -> str | None:
    """The branch whose head decides whether `request` is superseded; None when nothing does
    (a build of an exact commit through the API is an explicit ask)."""
    if request.source not in PUSH_SOURCES or not request.commit_sha or not request.branch:
        return None
    return request.branch


async def production_commit(deployments: DeploymentRecords, project_id: str) -> str | None:
    """The commit production serves now, if it is known: what the checkout is asked to compare
    this build's commit with, so the promotion need not ask the repository again."""
    current = await deployments.production_alias(project_id)
    if current is None:
        return None
    return current.commit_sha or await _recorded_commit(deployments, current)


async def superseded_reason(
    request: BuildRequested,
    remote: GitRemote,
    commit_sha: str | None,
    workspace: Path,
    *,
    timeout: float,
    facts: CheckoutFacts | None = None,
) -> str | None:
    """Why a pushed commit is not built any more: its branch has moved on or is gone.

    The branch head the checkout's session saw (`facts`) decides when it looked this branch
    up; otherwise the remote is asked now. None for every other build (`branch_to_check`).
    """
    branch = branch_to_check(request)
    if branch is None:
        return None
    if facts is not None and facts.branch == branch:
        head = facts.branch_head
    else:
        head = await remote_branch_head(remote, branch, workspace, timeout=timeout)
    if head is None:
        return f"superseded: branch {request.branch} no longer exists"
    if head != commit_sha:
        return f"superseded: branch is at {head}"
    return None


async def promote_forward(
    deployments: DeploymentRecords,
    deployment: Deployment,
    *,
    remote: GitRemote,
    history_dir: Path,
    deadline: float,
    say: Callable[[str], Awaitable[None]],
    facts: CheckoutFacts | None = None,
) -> bool:
    """Point production at `deployment` unless production serves a commit that contains this
    one (the same commit or a descendant) or a newer build; `say` tells the build log why not.

    The alias is read right before deciding. If it serves the commit the checkout's session
    compared this one with (`facts`), that answer decides; otherwise ancestry is decided with
    the repository's history, fetched into `history_dir` (removed afterwards) until
    `deadline`. When it cannot be decided, the build numbers decide.
    """
    for _ in range(_PROMOTE_ATTEMPTS):
        current = await deployments.production_alias(deployment.project_id)
        if current is not None:
            served = current.commit_sha or await _recorded_commit(deployments, current)
            contained, why = await _contains(
                remote, served, deployment.commit_sha, history_dir, deadline, facts
            )
            if contained:
                await say(
                    f"Not promoted: production serves {served}, which already contains this commit"
                )
                return False
            if contained is None:
                await say(
                    f"Could not tell whether production's commit {served} contains this commit "
                    f"({why}); deciding by build number"
                )
        if await deployments.promote_if_newer(deployment, current):
            return True
        now = await deployments.production_alias(deployment.project_id)
        if now is not None and current is not None and now.deployment_id == current.deployment_id:
            if now.pinned:
                await say(f"Not promoted: production is pinned to build #{now.number}")
            else:
                await say(
                    f"Not promoted: production serves build #{now.number}, newer than this one"
                )
            return False
        # Another build took the alias while this one decided: decide again against that one.
    await say("Not promoted: production kept changing while this build was deciding")
    return False


async def _recorded_commit(deployments: DeploymentRecords, alias: ProductionAlias) -> str | None:
    """The commit of an alias set before aliases recorded it."""
    served = await deployments.get(alias.deployment_id)
    return served.commit_sha if served else None


async def _contains(
    remote: GitRemote,
    served: str | None,
    commit: str | None,
    history_dir: Path,
    deadline: float,
    facts: CheckoutFacts | None = None,
) -> tuple[bool | None, str]:
    """Whether `served` is `commit` or a descendant of it, or None and why that is unknown."""
    if served is None or commit is None:
        return None, "the commit is not recorded"
    if served == commit:
        return True, ""
    if (
        facts is not None
        and facts.contained is not None
        and (facts.commit_sha, facts.contained_in) == (commit, served)
    ):
        return facts.contained, ""  # decided in the checkout's session: commits never change
    time_left = deadline - asyncio.get_running_loop().time()
    if time_left < 1:
        return None, "the build's time limit is reached"
    try:
        contained = await commit_in_history(remote, commit, served, history_dir, timeout=time_left)
    except (CheckoutError, TimeoutError) as exc:
        log.info("ancestry of %s and %s undecided: %s", commit, served, exc or "timed out")
        return None, str(exc) or "the build's time limit is reached"
    finally:
        await asyncio.to_thread(shutil.rmtree, history_dir, ignore_errors=True)
    if contained is None:
        return None, "they are too far apart in history"
    return contained, ""
