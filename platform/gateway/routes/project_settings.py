"""A project's build and scheduling settings (`PATCH /api/projects/{id}`) and build variables
(`/api/projects/{id}/env/{name}`): owners change them, maintainers may read the variables,
nobody reads a secret's value."""

from __future__ import annotations

from quart import Blueprint
from quart.typing import ResponseReturnValue
from quart_schema import tag_blueprint, validate_request, validate_response

from gobuild.platform.auth.permissions import Action
from gobuild.platform.gateway.authorization import current_principal
from gobuild.platform.gateway.build_configuration import (
    set_variable,
    update_build_settings,
    variable_view,
)
from gobuild.platform.gateway.context import gateway
from gobuild.platform.gateway.errors import ApiError
from gobuild.platform.gateway.openapi import document_errors, document_raw_response
from gobuild.platform.gateway.routes.projects import find_project, shown_project
from gobuild.platform.gateway.schemas import (
    ProjectSettingsUpdate,
    ProjectView,
    VariableList,
    VariableSet,
    VariableView,
)
from gobuild.platform.stores.build_variables import BuildVariableStore

blueprint = Blueprint("project_settings", __name__, url_prefix="/api/projects/<project_ref>")
tag_blueprint(blueprint, ["projects"])


@blueprint.patch("")
@validate_request(ProjectSettingsUpdate)
@validate_response(ProjectView)
async def update_settings(project_ref: str, data: ProjectSettingsUpdate) -> ResponseReturnValue:
    """Change the project's build settings: `install_command`, `build_command`, `output_dir`,
    `image` and `root_dir` (a monorepo subfolder), which the repository's gobuild.toml
    overrides; and its scheduling: `auto_cancel`, `concurrency_limit`, `required_labels`,
    `build_timeout_seconds` (only lower than the instance's) and `depends_on` (projects the
    caller may read, by id or name; a cycle is refused naming it). A field left out is kept,
    null clears it. Applies to the next build."""
    ctx = gateway()
    project = await find_project(ctx, project_ref, Action.PROJECT_UPDATE)
    updated = await update_build_settings(ctx, project, data, current_principal())
    return await shown_project(ctx, updated)


@blueprint.get("/env")
@validate_response(VariableList)
async def list_variables(project_ref: str) -> ResponseReturnValue:
    """The project's build variables by name; a secret shows only that it is set, by whom and
    when."""
    ctx = gateway()
    project = await find_project(ctx, project_ref, Action.ENV_READ)
    variables = await BuildVariableStore(ctx.redis).list(project.id)
    return VariableList(variables=[variable_view(v) for v in variables])


@blueprint.get("/env/<name>")
@validate_response(VariableView)
async def get_variable(project_ref: str, name: str) -> ResponseReturnValue:
    """One build variable (a secret's value is null)."""
    ctx = gateway()
    project = await find_project(ctx, project_ref, Action.ENV_READ)
    variable = await BuildVariableStore(ctx.redis).get(project.id, name)
    if variable is None:
        raise ApiError(404, "variable not found", name)
    return variable_view(variable)


@blueprint.put("/env/<name>")
@validate_request(VariableSet)
@validate_response(VariableView)
@document_errors(409)
async def put_variable(project_ref: str, name: str, data: VariableSet) -> ResponseReturnValue:
    """Set a build variable for production builds, preview builds or both (from the next
    build). A secret is kept encrypted, never shown again and masked as `***` in build logs;
    names starting with GOBUILD, `HOME` and `CI` are GoBuild's own."""
    ctx = gateway()
    project = await find_project(ctx, project_ref, Action.ENV_MANAGE)
    variable = await set_variable(ctx, project, name, data, current_principal())
    return variable_view(variable)


@blueprint.delete("/env/<name>")
@document_raw_response(204, "Deleted: builds from now on do not get it.")
async def delete_variable(project_ref: str, name: str) -> ResponseReturnValue:
    """Delete a build variable."""
    ctx = gateway()
    project = await find_project(ctx, project_ref, Action.ENV_MANAGE)
    if not await BuildVariableStore(ctx.redis).delete(project.id, name):
        raise ApiError(404, "variable not found", name)
    return "", 204
