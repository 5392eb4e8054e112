"""Projects: register a repository, list projects and their builds, build a branch now,
rotate the webhook secret."""

from __future__ import annotations

import secrets
from collections.abc import Mapping

from quart import Blueprint
from quart.typing import ResponseReturnValue
from quart_schema import tag_blueprint, validate_querystring, validate_request, validate_response

from gobuild.platform.auth.permissions import Action, Principal, is_allowed, scopes_allow
from gobuild.platform.auth.users import UnknownUser
from gobuild.platform.gateway.authorization import (
    current_principal,
    require,
    require_in_project,
    why_not,
)
from gobuild.platform.gateway.context import GatewayContext, gateway
from gobuild.platform.gateway.errors import ApiError
from gobuild.platform.gateway.host_names import reserved_project_names
from gobuild.platform.gateway.openapi import document_errors
from gobuild.platform.gateway.project_caches import cache_summary
from gobuild.platform.gateway.project_names import readable_names
from gobuild.platform.gateway.queue_status import queue_statuses
from gobuild.platform.gateway.repo_sources import admit_repository
from gobuild.platform.gateway.routes.builds import build_view
from gobuild.platform.gateway.schemas import (
    BuildAccepted,
    BuildCreate,
    BuildList,
    BuildListQuery,
    ProjectCreate,
    ProjectCreated,
    ProjectList,
    ProjectReference,
    ProjectView,
    WebhookSecretRotated,
)
from gobuild.platform.gateway.triggers import TriggerRequest, enqueue_build
from gobuild.platform.gateway.webhook_secrets import rotate_webhook_secret
from gobuild.platform.records import Project, new_id

blueprint = Blueprint("projects", __name__, url_prefix="/api/projects")
tag_blueprint(blueprint, ["projects"])


def project_view(
    ctx: GatewayContext,
    project: Project,
    principal: Principal,
    production_deployment_id: str | None = None,
    production_pinned: bool = False,
    dependency_names: Mapping[str, str] | None = None,
) -> ProjectView:
    """The project as the API shows it; `dependency_names`: the names of the projects it
    depends on that the caller may read."""
    base = ctx.settings.gateway_public_url
    provider = "gitlab" if project.provider == "gitlab" else "github"
    names = dependency_names or {}
    return ProjectView(
        **project.public(),
        production_url=ctx.settings.deployment_url(project.name),
        webhook_url=f"{base}/webhooks/{provider}",
        production_deployment_id=production_deployment_id,
        production_pinned=production_pinned,
        role=principal.project_roles.get(project.id),
        dependencies=[ProjectReference(id=i, name=names.get(i)) for i in project.depends_on],
    )


async def shown_project(ctx: GatewayContext, project: Project) -> ProjectView:
    """One project with its production alias and the names of its dependencies."""
    principal = current_principal()
    alias = await ctx.deployments.production_alias(project.id)
    return project_view(
        ctx,
        project,
        principal,
        alias.deployment_id if alias else None,
        production_pinned=bool(alias and alias.pinned),
        dependency_names=await readable_names(ctx, principal, project.depends_on),
    )


async def find_project(
    ctx: GatewayContext, project_ref: str, action: Action = Action.PROJECT_READ
) -> Project:
    """The project named by id or name, if the caller may do `action` in it; else 404/403."""
    current_principal()
    not_found = ApiError(404, "project not found", project_ref)
    project = await ctx.projects.get(project_ref) or await ctx.projects.get_by_name(project_ref)
    if project is None:
        raise not_found
    require_in_project(project.id, action, not_found)
    return project


@blueprint.post("")
@validate_request(ProjectCreate)
@validate_response(ProjectCreated, 201)
@document_errors(409)
async def create_project(data: ProjectCreate) -> ResponseReturnValue:
    """Register a repository as a project; the caller becomes its owner.

    Names of GoBuild's own hosts (`api`, `www`, the public and dashboard hosts...) are refused.
    Local paths and hosts on internal networks are refused (422) unless the caller is an
    instance admin; credentials in the URL are kept encrypted and shown as `***`.
    """
    principal = require(Action.PROJECT_CREATE)
    ctx = gateway()
    reserved = reserved_project_names(ctx.settings, ctx.gateway_settings)
    if data.name in reserved:
        raise ApiError(
            422,
            "project name is reserved",
            f"{data.name!r} is, or could become, one of GoBuild's own host names; choose "
            f"another name (reserved: {', '.join(sorted(reserved))})",
        )
    if await ctx.deployments.get(data.name):
        raise ApiError(409, "name is taken", f"{data.name!r} is already a deployment host name")
    repository = await admit_repository(ctx, principal, data.repo_url)
    project = Project(
        id=new_id("p_"),
        name=data.name,
        repo_url=repository.repo_url,
        repo_credentials=repository.repo_credentials,
        trusted_source=repository.trusted_source,
        provider=data.provider,
        production_branch=data.production_branch,
        build_tags=data.build_tags,
        webhook_secret=data.webhook_secret or secrets.token_urlsafe(32),
    )
    if not await ctx.projects.create(project):
        raise ApiError(409, "project name is taken", data.name)
    role = None
    if principal.kind != "admin_key":  # the admin key is nobody: admins see every project
        try:
            role = await ctx.auth.users.set_member(project.id, principal.username, "owner")
        except UnknownUser:
            raise ApiError(401, "invalid credentials", "the user no longer exists") from None
    view = project_view(ctx, project, principal).model_dump()
    view["role"] = role
    # The secret is shown here, once, so it can be pasted into the provider's webhook form.
    return ProjectCreated(**view, webhook_secret=project.webhook_secret), 201


@blueprint.get("")
@validate_response(ProjectList)
async def list_projects() -> ResponseReturnValue:
    """The projects the caller belongs to (admins: every project)."""
    principal = current_principal()
    if principal.scopes is not None and not scopes_allow(principal.scopes, Action.PROJECT_READ):
        raise ApiError(403, "forbidden", why_not(principal, Action.PROJECT_READ))
    ctx = gateway()
    projects = [
        p for p in await ctx.projects.list() if is_allowed(principal, Action.PROJECT_READ, p.id)
    ]
    names = {p.id: p.name for p in projects}
    return ProjectList(
        projects=[project_view(ctx, p, principal, dependency_names=names) for p in projects]
    )


@blueprint.get("/<project_ref>")
@validate_response(ProjectView)
async def get_project(project_ref: str) -> ResponseReturnValue:
    """One project, by id or name, with its current production deployment, whether the
    production alias is pinned to it, its cache hit rate and the size of its caches."""
    ctx = gateway()
    project = await find_project(ctx, project_ref)
    caches = await cache_summary(ctx, project.id)
    view = await shown_project(ctx, project)
    return view.model_copy(
        update={"cache_hit_rate": caches.hit_rate, "cache_size_bytes": caches.total_bytes}
    )


@blueprint.get("/<project_ref>/builds")
@validate_querystring(BuildListQuery)
@validate_response(BuildList)
async def list_builds(project_ref: str, query_args: BuildListQuery) -> ResponseReturnValue:
    """The project's builds, newest first (a queued one with its place in the queue)."""
    ctx = gateway()
    project = await find_project(ctx, project_ref, Action.BUILD_READ)
    builds = await ctx.builds.list_for_project(project.id, query_args.limit)
    queue = await queue_statuses(ctx, builds)
    return BuildList(builds=[build_view(ctx, b, queue.get(b.id)) for b in builds])


@blueprint.post("/<project_ref>/builds")
@validate_request(BuildCreate)
@validate_response(BuildAccepted, 202)
@document_errors(503)
async def create_build(project_ref: str, data: BuildCreate) -> ResponseReturnValue:
    """Build a branch (default: the production branch) or one commit of it now."""
    ctx = gateway()
    project = await find_project(ctx, project_ref, Action.BUILD_CREATE)
    branch = data.branch or project.production_branch
    build = await enqueue_build(
        ctx,
        project,
        TriggerRequest(
            source="api", ref=f"refs/heads/{branch}", branch=branch, commit_sha=data.commit_sha
        ),
    )
    return BuildAccepted(
        build_id=build.id,
        status_url=f"{ctx.settings.gateway_public_url}/api/builds/{build.id}",
    ), 202


@blueprint.post("/<project_ref>/webhook-secret/rotate")
@validate_response(WebhookSecretRotated)
async def rotate_secret(project_ref: str) -> ResponseReturnValue:
    """Replace the webhook secret; the old one keeps working for the grace period.

    The new secret is shown here, once.
    """
    ctx = gateway()
    project = await find_project(ctx, project_ref, Action.PROJECT_UPDATE)
    try:
        secret, valid_until = await rotate_webhook_secret(
            ctx.redis, project.id, ctx.gateway_settings.webhook_secret_grace_seconds
        )
    except LookupError:
        raise ApiError(404, "project not found", project_ref) from None
    return WebhookSecretRotated(webhook_secret=secret, previous_secret_expires_at=valid_until)
