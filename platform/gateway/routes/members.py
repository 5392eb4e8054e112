"""Project members: who may do what in a project (owners and admins manage them)."""

from __future__ import annotations

from quart import Blueprint
from quart.typing import ResponseReturnValue
from quart_schema import tag_blueprint, validate_request, validate_response

from gobuild.platform.auth.permissions import Action
from gobuild.platform.auth.users import LastOwnerError, UnknownUser
from gobuild.platform.gateway.authorization import current_principal
from gobuild.platform.gateway.context import gateway
from gobuild.platform.gateway.errors import ApiError
from gobuild.platform.gateway.openapi import document_errors, document_raw_response
from gobuild.platform.gateway.routes.projects import find_project
from gobuild.platform.gateway.schemas import MemberList, MemberSet, MemberView

blueprint = Blueprint("members", __name__, url_prefix="/api/projects/<project_ref>/members")
tag_blueprint(blueprint, ["members"])


@blueprint.get("")
@validate_response(MemberList)
async def list_members(project_ref: str) -> ResponseReturnValue:
    """The project's members and their roles."""
    ctx = gateway()
    project = await find_project(ctx, project_ref, Action.PROJECT_READ)
    members = await ctx.auth.users.members(project.id)
    return MemberList(members=[MemberView(username=u, role=r) for u, r in members.items()])


@blueprint.post("")
@validate_request(MemberSet)
@validate_response(MemberView)
@document_errors(409)
async def set_member(project_ref: str, data: MemberSet) -> ResponseReturnValue:
    """Add a user to the project, or change their role (`owner`, `maintainer`, `viewer`)."""
    ctx = gateway()
    project = await find_project(ctx, project_ref, Action.MEMBERS_MANAGE)
    try:
        role = await ctx.auth.users.set_member(project.id, data.username, data.role.value)
    except UnknownUser:
        raise ApiError(404, "user not found", data.username) from None
    except LastOwnerError as error:
        raise ApiError(409, "the project needs an owner", str(error)) from None
    return MemberView(username=data.username, role=role)


@blueprint.delete("/<username>")
@document_raw_response(204, "The user is no longer a member.")
@document_errors(409)
async def remove_member(project_ref: str, username: str) -> ResponseReturnValue:
    """Remove a user from the project (members may also remove themselves)."""
    ctx = gateway()
    principal = current_principal()
    # A signed-in member may leave; an API key needs the right to manage members.
    leaving = principal.kind == "user" and principal.username == username
    project = await find_project(
        ctx, project_ref, Action.PROJECT_READ if leaving else Action.MEMBERS_MANAGE
    )
    try:
        removed = await ctx.auth.users.remove_member(project.id, username)
    except LastOwnerError as error:
        raise ApiError(409, "the project needs an owner", str(error)) from None
    if not removed:
        raise ApiError(404, "member not found", username)
    return "", 204
