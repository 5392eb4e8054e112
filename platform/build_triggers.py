"""Making a build from a trigger: the build record and the trigger event that announces it, as
the gateway records them for a push, an API call or a redeploy, and the orchestrator for a
project whose dependency built (`gobuild.platform.orchestrator.dependents`)."""

from __future__ import annotations

from dataclasses import dataclass

from gobuild.platform.events import BuildTriggered, TriggerSource
from gobuild.platform.records import Build, Project, new_id


@dataclass(frozen=True)
class TriggerRequest:
    """What asks for a build: where it came from and what to build. Without a commit the
    builder builds the head of `ref` (and reports the commit it checked out)."""

    source: TriggerSource
    ref: str
    branch: str | None
    tag: str | None = None
    commit_sha: str | None = None
    commit_message: str | None = None
    author: str | None = None
    delivery_id: str | None = None
    # The build of a dependency whose success triggered this one (source `dependency`).
    triggered_by: str | None = None


# What a trigger event repeats of the build record it announces.
_TRIGGER_FIELDS = {
    "project_id",
    "source",
    "repo_url",
    "ref",
    "branch",
    "tag",
    "commit_sha",
    "commit_message",
    "author",
}


def new_build(
    project: Project, trigger: TriggerRequest, *, build_id: str | None = None
) -> tuple[Build, BuildTriggered]:
    """A queued build of `project` for `trigger`, and its trigger event (not recorded yet).

    `build_id`: an id derived from what caused the build, so that recording it twice is seen
    (`BuildStore.record_trigger_once`); default: a new random one.
    """
    build = Build(
        id=build_id or new_id("b_"),
        project_id=project.id,
        source=trigger.source,
        repo_url=project.repo_url,
        ref=trigger.ref,
        branch=trigger.branch,
        tag=trigger.tag,
        commit_sha=trigger.commit_sha,
        commit_message=trigger.commit_message,
        author=trigger.author,
        production=trigger.branch is not None and trigger.branch == project.production_branch,
        triggered_by=trigger.triggered_by,
    )
    event = BuildTriggered(
        build_id=build.id,
        delivery_id=trigger.delivery_id,
        **build.model_dump(include=_TRIGGER_FIELDS),
    )
    return build, event
