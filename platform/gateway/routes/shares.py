"""Share links: maintainers create, list and revoke them; whoever holds one reads that one
build (view, log, artifact) without an account, until it expires or is revoked.

The `/api/shared/{token}` routes are public; the token alone names the build, so nothing in
the request can point them at another one.
"""

from __future__ import annotations

from quart import Blueprint
from quart.typing import ResponseReturnValue
from quart_schema import (
    document_querystring,
    tag_blueprint,
    validate_querystring,
    validate_request,
    validate_response,
)

from gobuild.platform.auth.permissions import Action, is_allowed, scopes_allow
from gobuild.platform.auth.share_links import ShareLink
from gobuild.platform.auth.users import UserError
from gobuild.platform.gateway.authorization import current_principal, require_in_project, why_not
from gobuild.platform.gateway.context import GatewayContext, gateway
from gobuild.platform.gateway.errors import ApiError
from gobuild.platform.gateway.openapi import document_errors, document_raw_response, public
from gobuild.platform.gateway.routes.builds import (
    artifact_response,
    find_build,
    log_response,
    resources_response,
)
from gobuild.platform.gateway.schemas import (
    BuildResources,
    LogQuery,
    ShareCreate,
    SharedBuildView,
    ShareLinkList,
    ShareLinkView,
    ShareListQuery,
)
from gobuild.platform.records import Build

blueprint = Blueprint("shares", __name__)
tag_blueprint(blueprint, ["shares"])

# Share tokens are a few hundred characters; anything much longer is not one.
_MAX_TOKEN_LENGTH = 2048


def share_url(ctx: GatewayContext, token: str) -> str:
    """The read-only page of a shared build: the dashboard's, or without a dashboard the
    gateway's JSON view."""
    dashboard = ctx.gateway_settings.dashboard_url.rstrip("/")
    if dashboard:
        return f"{dashboard}/share/{token}"
    return f"{ctx.settings.gateway_public_url}/api/shared/{token}"


def share_link_view(ctx: GatewayContext, link: ShareLink) -> ShareLinkView:
    token = ctx.auth.share_links.token_for(link)
    return ShareLinkView(**link.model_dump(), url=share_url(ctx, token), token=token)


@blueprint.post("/api/builds/<build_id>/share")
@validate_request(ShareCreate)
@validate_response(ShareLinkView, 201)
async def create_share_link(build_id: str, data: ShareCreate) -> ResponseReturnValue:
    """A link that shows this build read-only to whoever opens it, until `expires_in` seconds
    have passed or it is revoked."""
    ctx = gateway()
    build = await find_build(ctx, build_id, Action.SHARE_CREATE)
    principal = current_principal()
    try:
        link, _ = await ctx.auth.share_links.create(
            build.id, principal.username, data.expires_in, project_id=build.project_id
        )
    except UserError as exc:
        raise ApiError(422, "invalid request: check expires_in", str(exc)) from None
    return share_link_view(ctx, link), 201


@blueprint.get("/api/shares")
@validate_querystring(ShareListQuery)
@validate_response(ShareLinkList)
@document_errors(404)
async def list_share_links(query_args: ShareListQuery) -> ResponseReturnValue:
    """The live share links of the builds of projects the caller may share from, newest
    first (with `build_id`: of that build only)."""
    principal = current_principal()
    if principal.scopes is not None and not scopes_allow(principal.scopes, Action.SHARE_CREATE):
        raise ApiError(403, "forbidden", why_not(principal, Action.SHARE_CREATE))
    ctx = gateway()
    if query_args.build_id is not None:
        build = await find_build(ctx, query_args.build_id, Action.SHARE_CREATE)
        project_ids = [build.project_id]
    elif principal.is_admin:
        project_ids = [project.id for project in await ctx.projects.list()]
    else:
        project_ids = [
            project_id
            for project_id in principal.project_roles
            if is_allowed(principal, Action.SHARE_CREATE, project_id)
        ]
    links = await ctx.auth.share_links.list_for_projects(project_ids)
    if query_args.build_id is not None:
        links = [link for link in links if link.build_id == query_args.build_id]
    return ShareLinkList(links=[share_link_view(ctx, link) for link in links])


@blueprint.delete("/api/shares/<link_id>")
@document_raw_response(204, "Revoked: the link no longer opens the build.")
async def revoke_share_link(link_id: str) -> ResponseReturnValue:
    """Revoke a share link; opening it answers 410 from now on."""
    current_principal()
    ctx = gateway()
    not_found = ApiError(404, "share link not found", link_id)
    link = await ctx.auth.share_links.get(link_id)
    if link is None:
        raise not_found
    project_id = link.project_id
    if project_id is None:
        build = await ctx.builds.get(link.build_id)
        project_id = build.project_id if build else None
    if project_id is None:
        raise not_found
    require_in_project(project_id, Action.SHARE_CREATE, not_found)
    await ctx.auth.share_links.revoke(link.id)
    return "", 204


async def shared_build(ctx: GatewayContext, token: str) -> tuple[Build, ShareLink]:
    """The one build a share token opens, and its link; 404 for what is not a share link of
    this instance, 410 for an expired or revoked one."""
    not_found = ApiError(404, "share link not found", "check the link, or ask for a new one")
    if len(token) > _MAX_TOKEN_LENGTH:
        raise not_found
    checked = await ctx.auth.share_links.check(token)
    if checked.status == "expired":
        raise ApiError(410, "share link expired", "ask whoever shared it for a new link")
    if checked.status == "revoked":
        raise ApiError(410, "share link revoked", "ask whoever shared it for a new link")
    if checked.link is None:
        raise not_found
    build = await ctx.builds.get(checked.link.build_id)
    if build is None:
        raise not_found
    return build, checked.link


@blueprint.get("/api/shared/<token>")
@public
@validate_response(SharedBuildView)
@document_errors(410)
async def get_shared_build(token: str) -> ResponseReturnValue:
    """The shared build, read-only: state, step, commit, timing, artifact and deployment."""
    ctx = gateway()
    build, link = await shared_build(ctx, token)
    project = await ctx.projects.get(build.project_id)
    if project is None:
        raise ApiError(404, "share link not found", "the project no longer exists")
    base = f"{ctx.settings.gateway_public_url}/api/shared/{token}"
    return SharedBuildView(
        **build.model_dump(include=set(SharedBuildView.model_fields)),
        project_name=project.name,
        log_url=f"{base}/logs",
        artifact_url=f"{base}/artifact" if build.artifact else None,
        link_expires_at=link.expires_at,
    )


@blueprint.get("/api/shared/<token>/logs")
@public
@document_querystring(LogQuery)
@document_raw_response(
    200,
    "The console output as plain text (`X-Log-Complete` says whether the build has ended).",
    content_type="text/plain",
)
@document_errors(410, 503)
async def get_shared_logs(token: str) -> ResponseReturnValue:
    """The shared build's console as plain text; `?follow=1` streams until the build ends."""
    ctx = gateway()
    build, _ = await shared_build(ctx, token)
    return await log_response(ctx, build)


@blueprint.get("/api/shared/<token>/resources")
@public
@validate_response(BuildResources)
@document_errors(410)
async def get_shared_resources(token: str) -> ResponseReturnValue:
    """The shared build's CPU and memory over time (its resource samples, oldest first)."""
    ctx = gateway()
    build, _ = await shared_build(ctx, token)
    return await resources_response(ctx, build)


@blueprint.get("/api/shared/<token>/artifact")
@public
@document_raw_response(
    200,
    "The build output as a gzip-compressed tar archive (`X-Checksum-Sha256`).",
    content_type="application/gzip",
)
@document_errors(410, 503)
async def get_shared_artifact(token: str) -> ResponseReturnValue:
    """Download the shared build's output archive."""
    ctx = gateway()
    build, _ = await shared_build(ctx, token)
    return await artifact_response(ctx, build)
