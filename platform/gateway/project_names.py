"""Names of other projects where a view mentions them (dependencies, queued and running
builds): shown only for the projects the caller may read."""

from __future__ import annotations

from collections.abc import Iterable

from gobuild.platform.auth.permissions import Action, Principal
from gobuild.platform.gateway.authorization import may_in_project
from gobuild.platform.gateway.context import GatewayContext


async def readable_names(
    ctx: GatewayContext,
    principal: Principal,
    project_ids: Iterable[str],
    action: Action = Action.PROJECT_READ,
) -> dict[str, str]:
    """The names, by id, of those of the projects in which the caller may do `action`."""
    names: dict[str, str] = {}
    for project_id in dict.fromkeys(project_ids):
        if not may_in_project(principal, project_id, action):
            continue
        project = await ctx.projects.get(project_id)
        if project is not None:
            names[project_id] = project.name
    return names
