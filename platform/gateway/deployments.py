"""Serving deployments by host name.

`<deployment-id>.<GOBUILD_DEPLOY_DOMAIN>` serves that deployment, `<project>.<domain>` the
project's production alias. Files come streamed from storage; unknown hosts and paths are 404.
"""

from __future__ import annotations

from urllib.parse import quote

from quart import Quart, Response, request

from gobuild.platform.gateway.context import GatewayContext, gateway
from gobuild.platform.gateway.errors import error_response
from gobuild.platform.gateway.storage_proxy import open_storage_stream, relay_response


def deployment_label(host: str, deploy_domain: str) -> str | None:
    """The first label of `host` if it is a direct subdomain of the deploy domain."""
    name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
    name = name.lower().rstrip(".")
    suffix = "." + deploy_domain.lower().strip(".")
    if not name.endswith(suffix):
        return None
    label = name[: -len(suffix)]
    return label if label and "." not in label else None


async def resolve_deployment(ctx: GatewayContext, label: str) -> str | None:
    """A deployment id for a host label: the deployment itself or a project's production alias."""
    if await ctx.deployments.get(label):
        return label
    project = await ctx.projects.get_by_name(label)
    if project is None:
        return None
    alias = await ctx.deployments.production_alias(project.id)
    return alias.deployment_id if alias else None


async def serve_deployment(label: str) -> Response:
    ctx = gateway()
    if request.method not in {"GET", "HEAD"}:
        return error_response(405, "method not allowed", "deployments are read-only")
    deployment_id = await resolve_deployment(ctx, label)
    if deployment_id is None:
        return error_response(404, "no deployment at this host", request.host)
    path = quote(request.path.lstrip("/"), safe="/")
    conditional = {
        name: request.headers[name]
        for name in ("If-None-Match", "If-Modified-Since")
        if name in request.headers
    }
    upstream = await open_storage_stream(
        ctx,
        f"/deployments/{deployment_id}/files/{path}",
        method=request.method,
        headers=conditional,
    )
    if upstream.status_code >= 400:
        await upstream.aclose()
        return error_response(404, "not found", request.path)
    response = relay_response(upstream, [("X-GoBuild-Deployment", deployment_id)])
    if label != deployment_id:  # the alias moves with every promotion
        response.headers["Cache-Control"] = "no-cache"
    return response


def register_deployment_host(app: Quart) -> None:
    """Requests for a deployment host never reach the API routes."""

    @app.before_request
    async def _deployment_host() -> Response | None:
        label = deployment_label(request.host, gateway().settings.deploy_domain)
        if label is None:
            return None
        return await serve_deployment(label)
