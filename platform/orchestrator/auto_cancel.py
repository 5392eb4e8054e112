"""Auto-cancel: a newer push to a branch makes the branch's older push builds pointless, so
they are cancelled when it is queued (a project turns this off with `auto_cancel`).

Only builds a push made (GitHub, GitLab) supersede and are superseded: a redeploy, an API build
or a dependency's build is asked for on purpose, and a tag build is no branch's build.
"""

from __future__ import annotations

import logging

from gobuild.platform.build_cancellation import cancel_build
from gobuild.platform.bus import EventProducer
from gobuild.platform.events import TriggerSource
from gobuild.platform.records import Build, Project
from gobuild.platform.stores.builds import BuildStore

log = logging.getLogger(__name__)

PUSH_SOURCES: frozenset[TriggerSource] = frozenset({"github", "gitlab"})


def is_branch_push(build: Build) -> bool:
    return build.source in PUSH_SOURCES and build.branch is not None and build.tag is None


def supersedes(newer: Build, older: Build) -> bool:
    """Whether push build `newer` makes the unfinished `older` one pointless: a push build of
    the same project and branch, created before it."""
    return (
        is_branch_push(newer)
        and is_branch_push(older)
        and older.id != newer.id
        and older.project_id == newer.project_id
        and older.branch == newer.branch
        and older.created_at < newer.created_at
        and not older.state.is_terminal
    )


def superseded_reason(newer: Build) -> str:
    """What a build `newer` superseded says: "superseded by build #12 (b_…)"."""
    shown = f"#{newer.number} ({newer.id})" if newer.number is not None else newer.id
    return f"superseded by build {shown}"


async def cancel_superseded_builds(
    builds: BuildStore, producer: EventProducer, build: Build, project: Project
) -> list[Build]:
    """Cancel the unfinished push builds of `build`'s branch that were created before it, when
    `build` is a branch push of a project with `auto_cancel`; the builds as they are after.

    A queued one (or one dispatched that no builder holds yet) ends `cancelled` at once and
    leaves the queue; one a builder runs is stopped by that builder with the same reason.
    Call it once `build` has its number, which the reason shows.
    """
    if not project.auto_cancel or not is_branch_push(build):
        return []
    reason = superseded_reason(build)
    cancelled: list[Build] = []
    for older in await builds.unfinished_for_project(project.id):
        if not supersedes(build, older) or older.superseded_by is not None:
            continue  # not this push's to cancel, or being stopped for an earlier one already
        after = await cancel_build(builds, producer, older, reason=reason, superseded_by=build.id)
        log.info(
            "auto-cancel: build %s of %s (%s) %s: %s",
            older.id,
            project.name,
            older.branch,
            after.state.value if after.state.is_terminal else "asked to stop",
            reason,
        )
        cancelled.append(after)
    return cancelled
