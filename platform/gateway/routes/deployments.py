"""Deployments: a project's history of deployments, promote / instant rollback (which pins the
production alias), un-pin, and redeploy (the same commit built again)."""

from __future__ import annotations

from quart import Blueprint
from quart.typing import ResponseReturnValue
from quart_schema import tag_blueprint, validate_querystring, validate_response

from gobuild.platform.auth.permissions import Action
from gobuild.platform.gateway.authorization import current_principal, require_in_project
from gobuild.platform.gateway.context import gateway
from gobuild.platform.gateway.errors import ApiError
from gobuild.platform.gateway.openapi import document_errors
from gobuild.platform.gateway.production import (
    production_view,
    promote_deployment,
    unpin_production,
)
from gobuild.platform.gateway.routes.builds import find_build
from gobuild.platform.gateway.routes.projects import find_project
from gobuild.platform.gateway.schemas import (
    BuildAccepted,
    DeploymentList,
    DeploymentListQuery,
    DeploymentView,
    ProductionView,
)
from gobuild.platform.gateway.triggers import TriggerRequest, enqueue_build

blueprint = Blueprint("deployments", __name__)
tag_blueprint(blueprint, ["deployments"])


@blueprint.get("/api/projects/<project_ref>/deployments")
@validate_querystring(DeploymentListQuery)
@validate_response(DeploymentList)
async def list_deployments(
    project_ref: str, query_args: DeploymentListQuery
) -> ResponseReturnValue:
    """The project's deployments, newest first, and where its production alias points."""
    ctx = gateway()
    project = await find_project(ctx, project_ref, Action.BUILD_READ)
    production = await production_view(ctx, project)
    deployments = await ctx.deployments.list_for_project(project.id, query_args.limit)
    builds = {b.id: b for b in await ctx.builds.get_many([d.build_id for d in deployments])}
    views = []
    for deployment in deployments:
        build = builds.get(deployment.build_id)
        views.append(
            DeploymentView(
                **deployment.model_dump(),
                commit_message=build.commit_message if build else None,
                author=build.author if build else None,
                production=build.production if build else False,
                is_production_alias=deployment.id == production.deployment_id,
            )
        )
    return DeploymentList(production=production, deployments=views)


@blueprint.post("/api/deployments/<deployment_id>/promote")
@validate_response(ProductionView)
async def promote(deployment_id: str) -> ResponseReturnValue:
    """Serve this deployment at the production alias now, without building: a promotion, or an
    instant rollback to an earlier one.

    The alias is then pinned: new production builds deploy at their own URLs but do not take
    it until `POST /api/projects/{id}/production/unpin` or another promotion.
    """
    ctx = gateway()
    current_principal()
    not_found = ApiError(404, "deployment not found", deployment_id)
    deployment = await ctx.deployments.get(deployment_id)
    if deployment is None:
        raise not_found
    require_in_project(deployment.project_id, Action.DEPLOYMENT_PROMOTE, not_found)
    project = await ctx.projects.get(deployment.project_id)
    if project is None:
        raise not_found
    return await promote_deployment(ctx, project, deployment)


@blueprint.post("/api/projects/<project_ref>/production/unpin")
@validate_response(ProductionView)
async def unpin(project_ref: str) -> ResponseReturnValue:
    """Un-pin the production alias: it serves the newest production deployment now, and each
    new one from then on. An alias that is not pinned stays as it is."""
    ctx = gateway()
    project = await find_project(ctx, project_ref, Action.DEPLOYMENT_PROMOTE)
    return await unpin_production(ctx, project)


@blueprint.post("/api/builds/<build_id>/redeploy")
@validate_response(BuildAccepted, 202)
@document_errors(409, 503)
async def redeploy(build_id: str) -> ResponseReturnValue:
    """Build the same commit again as a new build (same branch or tag); a redeploy of a
    production-branch build is a production build."""
    ctx = gateway()
    build = await find_build(ctx, build_id, Action.DEPLOYMENT_REDEPLOY)
    if build.commit_sha is None:
        raise ApiError(
            409,
            "build has no commit yet",
            "its commit is known once it has been checked out; redeploy it after that",
        )
    project = await ctx.projects.get(build.project_id)
    if project is None:
        raise ApiError(404, "build not found", build_id)
    accepted = await enqueue_build(
        ctx,
        project,
        TriggerRequest(
            source="redeploy",
            ref=build.ref,
            branch=build.branch,
            tag=build.tag,
            commit_sha=build.commit_sha,
            commit_message=build.commit_message,
            author=build.author,
        ),
    )
    return BuildAccepted(
        build_id=accepted.id,
        status_url=f"{ctx.settings.gateway_public_url}/api/builds/{accepted.id}",
    ), 202
