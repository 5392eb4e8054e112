"""Serving deployments by host name.

`<deployment-id>.<GOBUILD_DEPLOY_DOMAIN>` serves that deployment, `<project>.<domain>` the
project's production alias; the gateway's own hosts never do (see `host_names`). Files come
streamed from storage; unknown hosts and paths are 404. A deployment host reaches only its
deployment's files: the request path is checked segment by segment before it becomes a
storage path, so no dot segment or encoded slash walks into storage's other routes.
"""

from __future__ import annotations

from urllib.parse import quote

from quart import Quart, Response, request

from gobuild.platform.gateway.context import GatewayContext, gateway
from gobuild.platform.gateway.errors import error_response
from gobuild.platform.gateway.host_names import deployment_host_label
from gobuild.platform.gateway.storage_proxy import open_storage_stream, relay_response
from gobuild.platform.storage_client import InvalidFilePath, deployment_file_path


def raw_request_path() -> str:
    """The request path as it came on the wire, still percent-encoded (Quart's
    `request.path` is already decoded, which would hide an encoded slash)."""
    raw = request.scope.get("raw_path")
    if isinstance(raw, bytes):
        return raw.decode("latin-1")
    return quote(request.path, safe="/")


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
    try:
        storage_path = deployment_file_path(deployment_id, raw_request_path())
    except InvalidFilePath as exc:
        return error_response(404, "not found", str(exc))
    conditional = {
        name: request.headers[name]
        for name in ("If-None-Match", "If-Modified-Since")
        if name in request.headers
    }
    upstream = await open_storage_stream(
        ctx,
        storage_path,
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
        ctx = gateway()
        label = deployment_host_label(request.host, ctx.settings, ctx.gateway_settings)
        if label is None:
            return None
        return await serve_deployment(label)
