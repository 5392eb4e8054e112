"""Builds: status, log (whole or followed live), artifact download, cancel."""

from __future__ import annotations

from quart import Blueprint, request
from quart.typing import ResponseReturnValue

from gobuild.platform.gateway.access import require_api_credentials
from gobuild.platform.gateway.context import GatewayContext, gateway
from gobuild.platform.gateway.errors import ApiError
from gobuild.platform.gateway.storage_proxy import open_storage_stream, relay_response
from gobuild.platform.records import Build

blueprint = Blueprint("builds", __name__, url_prefix="/api/builds")
blueprint.before_request(require_api_credentials)


def build_view(ctx: GatewayContext, build: Build) -> dict[str, object]:
    base = f"{ctx.settings.gateway_public_url}/api/builds/{build.id}"
    view = build.model_dump(mode="json")
    view["log_url"] = f"{base}/logs"
    view["artifact_url"] = f"{base}/artifact" if build.artifact else None
    return view


async def find_build(ctx: GatewayContext, build_id: str) -> Build:
    build = await ctx.builds.get(build_id)
    if build is None:
        raise ApiError(404, "build not found", build_id)
    return build


@blueprint.get("/<build_id>")
async def get_build(build_id: str) -> ResponseReturnValue:
    ctx = gateway()
    return build_view(ctx, await find_build(ctx, build_id))


@blueprint.get("/<build_id>/logs")
async def get_logs(build_id: str) -> ResponseReturnValue:
    """The build's console as plain text; `?follow=1` streams until the build ends."""
    ctx = gateway()
    build = await find_build(ctx, build_id)
    follow = request.args.get("follow", "").lower() in {"1", "true", "yes"}
    upstream = await open_storage_stream(
        ctx,
        f"/logs/{build.id}",
        params={"follow": "1"} if follow else None,
        read_timeout=None if follow else 30.0,
    )
    if upstream.status_code == 404:
        await upstream.aclose()
        return "", 200, {"Content-Type": "text/plain; charset=utf-8", "X-Log-Complete": "false"}
    return relay_response(upstream, [("Cache-Control", "no-cache"), ("X-Accel-Buffering", "no")])


@blueprint.get("/<build_id>/artifact")
async def get_artifact(build_id: str) -> ResponseReturnValue:
    ctx = gateway()
    build = await find_build(ctx, build_id)
    if build.artifact is None:
        raise ApiError(404, "this build has no artifact", f"state is {build.state.value}")
    upstream = await open_storage_stream(ctx, f"/artifacts/{build.id}", read_timeout=60.0)
    if upstream.status_code != 200:
        await upstream.aclose()
        raise ApiError(404, "artifact not found in storage", build.id)
    return relay_response(upstream)


@blueprint.post("/<build_id>/cancel")
async def cancel_build(build_id: str) -> ResponseReturnValue:
    ctx = gateway()
    build = await find_build(ctx, build_id)
    if build.state.is_terminal:
        raise ApiError(409, "build already finished", f"state is {build.state.value}")
    await ctx.builds.request_cancel(build.id)
    return {"build_id": build.id, "state": build.state.value, "cancel_requested": True}, 202
