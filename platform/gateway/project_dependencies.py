"""A project's dependencies (`depends_on`): the ids or names an owner gives, resolved to
projects the caller may read, and saved only when they close no cycle. The check reads every
project's dependencies in the same optimistic transaction that saves the change, so two
concurrent saves cannot make a cycle between them."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence

import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline

from gobuild.platform.auth.permissions import Action, Principal
from gobuild.platform.gateway.authorization import may_in_project
from gobuild.platform.gateway.context import GatewayContext
from gobuild.platform.gateway.errors import ApiError
from gobuild.platform.records import Project
from gobuild.platform.stores.keys import KEY_PROJECTS, key_project
from gobuild.platform.stores.optimistic import optimistic_update

# How a project the caller may not read appears in a cycle that is refused.
HIDDEN_PROJECT = "(a project you cannot read)"


class DependencyCycle(Exception):
    """The dependencies would make a cycle: `projects` from the changed project back to it."""

    def __init__(self, projects: list[Project]) -> None:
        super().__init__(" → ".join(p.name for p in projects))
        self.projects = projects


def find_cycle(depends_on: Mapping[str, Sequence[str]], start: str) -> list[str] | None:
    """The shortest path `start → ... → start` along the dependencies, or None."""
    parents: dict[str, str] = {}
    waiting = deque([start])
    while waiting:
        node = waiting.popleft()
        for dependency in depends_on.get(node, ()):
            if dependency == start:
                path = [node]
                while path[-1] != start:
                    path.append(parents[path[-1]])
                return [*reversed(path), start]
            if dependency not in parents and dependency != start:
                parents[dependency] = node
                waiting.append(dependency)
    return None


async def resolve_dependencies(
    ctx: GatewayContext, principal: Principal, project: Project, refs: Iterable[str]
) -> list[str]:
    """The ids of the projects named by id or name; 422 for one that does not exist or the
    caller may not read (the same answer, so other tenants' projects cannot be probed), and
    for the project itself."""
    ids: list[str] = []
    for ref in refs:
        found = await ctx.projects.get(ref) or await ctx.projects.get_by_name(ref)
        if found is None or not may_in_project(principal, found.id, Action.PROJECT_READ):
            raise ApiError(
                422,
                "unknown project in depends_on",
                f"there is no project {ref!r} that you may read",
            )
        if found.id == project.id:
            raise ApiError(
                422, "a project cannot depend on itself", f"remove {ref!r} from depends_on"
            )
        ids.append(found.id)
    return list(dict.fromkeys(ids))


async def update_checking_cycles(
    redis: aioredis.Redis, project_id: str, change: Callable[[Project], Project]
) -> Project | None:
    """Apply `change` to the stored project unless its dependencies would then make a cycle
    (DependencyCycle); the project as stored, or None if there is none.

    Every project's record is watched while the graph is read, so a concurrent change of any
    dependency (or a new project) runs the check again on the new graph.
    """

    async def transaction(pipe: Pipeline) -> Project | None:
        ids = [str(i) for i in await pipe.zrange(KEY_PROJECTS, 0, -1)]
        keys = [key_project(i) for i in ids]
        if keys:
            await pipe.watch(KEY_PROJECTS, *keys)
        raws = await pipe.mget(keys) if keys else []
        projects = {p.id: p for p in (Project.model_validate_json(r) for r in raws if r)}
        current = projects.get(project_id)
        if current is None:
            return None
        changed = change(current)
        projects[project_id] = changed
        cycle = find_cycle({i: p.depends_on for i, p in projects.items()}, project_id)
        if cycle is not None:
            raise DependencyCycle([projects[i] for i in cycle])
        pipe.multi()
        pipe.set(key_project(project_id), changed.model_dump_json())
        return changed

    return await optimistic_update(
        redis, [KEY_PROJECTS], transaction, what=f"the dependencies of project {project_id}"
    )


def cycle_refused(cycle: DependencyCycle, principal: Principal) -> ApiError:
    """422 naming the cycle, with a project the caller may not read left unnamed."""
    names = [
        p.name if may_in_project(principal, p.id, Action.PROJECT_READ) else HIDDEN_PROJECT
        for p in cycle.projects
    ]
    path = " → ".join(names)
    return ApiError(
        422,
        f"depends_on would make a dependency cycle: {path}",
        f"{names[0]} cannot depend on a project that depends on it ({path}); "
        "remove one of these dependencies",
    )
