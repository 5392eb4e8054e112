"""Projects: register a repository, list projects and their builds, build a branch now."""

from __future__ import annotations

import secrets

from quart import Blueprint, request
from quart.typing import ResponseReturnValue
from quart_schema import validate_request

from gobuild.platform.gateway.access import require_api_credentials
from gobuild.platform.gateway.context import GatewayContext, gateway
from gobuild.platform.gateway.errors import ApiError
from gobuild.platform.gateway.routes.builds import build_view
from gobuild.platform.gateway.schemas import BuildCreate, ProjectCreate
from gobuild.platform.gateway.triggers import TriggerRequest, enqueue_build
from gobuild.platform.records import Project, new_id

blueprint = Blueprint("projects", __name__, url_prefix="/api/projects")
blueprint.before_request(require_api_credentials)


def project_view(ctx: GatewayContext, project: Project) -> dict[str, object]:
    base = ctx.settings.gateway_public_url
    return {
        **project.public(),
        "production_url": ctx.settings.deployment_url(project.name),
        "webhook_url": f"{base}/webhooks/{'gitlab' if project.provider == 'gitlab' else 'github'}",
    }


async def find_project(ctx: GatewayContext, project_ref: str) -> Project:
    project = await ctx.projects.get(project_ref) or await ctx.projects.get_by_name(project_ref)
    if project is None:
        raise ApiError(404, "project not found", project_ref)
    return project


@blueprint.post("")
@validate_request(ProjectCreate)
async def create_project(data: ProjectCreate) -> ResponseReturnValue:
    ctx = gateway()
    if await ctx.deployments.get(data.name):
        raise ApiError(409, "name is taken", f"{data.name!r} is already a deployment host name")
    project = Project(
        id=new_id("p_"),
        name=data.name,
        repo_url=data.repo_url,
        provider=data.provider,
        production_branch=data.production_branch,
        build_tags=data.build_tags,
        webhook_secret=data.webhook_secret or secrets.token_urlsafe(32),
    )
    if not await ctx.projects.create(project):
        raise ApiError(409, "project name is taken", data.name)
    # The secret is shown here, once, so it can be pasted into the provider's webhook form.
    return {**project_view(ctx, project), "webhook_secret": project.webhook_secret}, 201


@blueprint.get("")
async def list_projects() -> ResponseReturnValue:
    ctx = gateway()
    return {"projects": [project_view(ctx, p) for p in await ctx.projects.list()]}


@blueprint.get("/<project_ref>")
async def get_project(project_ref: str) -> ResponseReturnValue:
    ctx = gateway()
    project = await find_project(ctx, project_ref)
    alias = await ctx.deployments.production_alias(project.id)
    view = project_view(ctx, project)
    view["production_deployment_id"] = alias.deployment_id if alias else None
    return view


@blueprint.get("/<project_ref>/builds")
async def list_builds(project_ref: str) -> ResponseReturnValue:
    ctx = gateway()
    project = await find_project(ctx, project_ref)
    try:
        limit = min(max(int(request.args.get("limit", "50")), 1), 500)
    except ValueError as exc:
        raise ApiError(400, "limit must be a whole number") from exc
    builds = await ctx.builds.list_for_project(project.id, limit)
    return {"builds": [build_view(ctx, b) for b in builds]}


@blueprint.post("/<project_ref>/builds")
@validate_request(BuildCreate)
async def create_build(project_ref: str, data: BuildCreate) -> ResponseReturnValue:
    ctx = gateway()
    project = await find_project(ctx, project_ref)
    branch = data.branch or project.production_branch
    build = await enqueue_build(
        ctx,
        project,
        TriggerRequest(
            source="api", ref=f"refs/heads/{branch}", branch=branch, commit_sha=data.commit_sha
        ),
    )
    return {
        "build_id": build.id,
        "status_url": f"{ctx.settings.gateway_public_url}/api/builds/{build.id}",
    }, 202
