"""Project dependencies: a successful production build of a project builds the production
branch of every project that depends on it (`Project.depends_on`), after it.

The dependent's build is made as the gateway makes an API build (no commit: the builder builds
the branch's head), recorded with its pending trigger, then handed to the normal trigger path,
where the scheduler holds it while a project it depends on has an unfinished build. A chain
A → B → C builds in order: C is triggered by B's success.

A completion may be delivered more than once: each dependent build's id is derived from the
build that succeeded and the dependent project, so it is recorded once however often the
success is seen.

A project reached twice (a diamond: A → B → D and A → C → D) builds once: D's build triggered
by B waits in the queue while C still builds (C was queued before it), so when C succeeds it
is still waiting and builds after both; C's success adds no second one. Only a dependent
build that already started is followed by another.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Awaitable, Callable

from gobuild.platform.build_state import BuildState
from gobuild.platform.build_triggers import TriggerRequest, new_build
from gobuild.platform.events import BuildTriggered
from gobuild.platform.records import Build, Project
from gobuild.platform.stores.builds import BuildStore
from gobuild.platform.stores.projects import ProjectStore

log = logging.getLogger(__name__)

_ID_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789"
_ID_LENGTH = 12


def dependent_build_id(cause_build_id: str, project_id: str) -> str:
    """The id of the build of `project_id` that the success of `cause_build_id` triggers: the
    same every time (a build id's shape: `b_` and 12 characters)."""
    digest = hashlib.sha256(f"dependency:{cause_build_id}:{project_id}".encode()).digest()
    number = int.from_bytes(digest[:16], "big")
    chars = []
    for _ in range(_ID_LENGTH):
        number, index = divmod(number, len(_ID_ALPHABET))
        chars.append(_ID_ALPHABET[index])
    return "b_" + "".join(chars)


def triggers_dependents(build: Build) -> bool:
    return build.state == BuildState.SUCCEEDED and build.production


async def dependents_of(projects: ProjectStore, project_id: str) -> list[Project]:
    """The projects with `project_id` in their `depends_on`."""
    return [
        project
        for project in await projects.list()
        if project_id in project.depends_on and project.id != project_id
    ]


async def trigger_dependents(
    builds: BuildStore,
    projects: ProjectStore,
    build: Build,
    hand_over: Callable[[BuildTriggered], Awaitable[None]],
) -> list[Build]:
    """After `build` ended: when it is a successful production build, record a production
    build (source `dependency`, `triggered_by` = its id) of each project that depends on its
    project, then pass each trigger to `hand_over` (the orchestrator's trigger path); the
    builds recorded now (none for a success seen before).

    All are recorded before any is handed over: one that is not handed over (a crash, an
    error) stays a pending trigger, which the sweep of pending triggers takes.
    """
    if not triggers_dependents(build):
        return []
    recorded: list[tuple[Build, BuildTriggered]] = []
    for project in await dependents_of(projects, build.project_id):
        waiting = await _waiting_dependency_build(builds, project)
        if waiting is not None:
            log.info(
                "build %s of %s already waits to build after its dependencies; build %s of %s "
                "adds none",
                waiting.id,
                project.name,
                build.id,
                build.project_id,
            )
            continue
        branch = project.production_branch
        dependent, trigger = new_build(
            project,
            TriggerRequest(
                source="dependency",
                ref=f"refs/heads/{branch}",
                branch=branch,
                triggered_by=build.id,
            ),
            build_id=dependent_build_id(build.id, project.id),
        )
        if await builds.record_trigger_once(dependent, trigger):
            log.info(
                "build %s of %s triggered by build %s of its dependency %s",
                dependent.id,
                project.name,
                build.id,
                build.project_id,
            )
            recorded.append((dependent, trigger))
    for _, trigger in recorded:
        await hand_over(trigger)
    return [dependent for dependent, _ in recorded]


async def _waiting_dependency_build(builds: BuildStore, project: Project) -> Build | None:
    """A build of `project` that a dependency's success triggered and that has not started
    yet (it builds its production branch's head once it does), if there is one."""
    for candidate in await builds.unfinished_for_project(project.id):
        if candidate.source == "dependency" and candidate.state == BuildState.QUEUED:
            return candidate
    return None
