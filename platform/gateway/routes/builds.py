"""Builds: status, log (whole or followed live), artifact download, cancel."""

from __future__ import annotations

from quart import Blueprint, request
from quart.typing import ResponseReturnValue
from quart_schema import document_querystring, tag_blueprint, validate_response

from gobuild.platform.auth.permissions import Action
from gobuild.platform.gateway import cancellation
from gobuild.platform.gateway.authorization import current_principal, require_in_project
from gobuild.platform.gateway.context import GatewayContext, gateway
from gobuild.platform.gateway.errors import ApiError
from gobuild.platform.gateway.openapi import document_errors, document_raw_response
from gobuild.platform.gateway.queue_status import queue_status
from gobuild.platform.gateway.schemas import (
    BuildResources,
    BuildView,
    CancelAccepted,
    LogQuery,
    QueueStatus,
)
from gobuild.platform.gateway.storage_proxy import open_storage_stream, relay_response
from gobuild.platform.records import Build
from gobuild.platform.repo_url import redact_url
from gobuild.platform.storage_client import artifact_path, log_path
from gobuild.platform.stores.resource_samples import ResourceSampleStore

blueprint = Blueprint("builds", __name__, url_prefix="/api/builds")
tag_blueprint(blueprint, ["builds"])


def build_view(ctx: GatewayContext, build: Build, queue: QueueStatus | None = None) -> BuildView:
    """The build as the API shows it; `queue`: its place in the queue while it is queued."""
    base = f"{ctx.settings.gateway_public_url}/api/builds/{build.id}"
    # Builds recorded before credentials were split off projects still carry them.
    shown = {**build.model_dump(), "repo_url": redact_url(build.repo_url)}
    return BuildView(
        **shown,
        log_url=f"{base}/logs",
        artifact_url=f"{base}/artifact" if build.artifact else None,
        queue=queue,
    )


async def find_build(
    ctx: GatewayContext, build_id: str, action: Action = Action.BUILD_READ
) -> Build:
    """The build, if the caller may do `action` in its project; else 404 (or 403)."""
    current_principal()
    not_found = ApiError(404, "build not found", build_id)
    build = await ctx.builds.get(build_id)
    if build is None:
        raise not_found
    require_in_project(build.project_id, action, not_found)
    return build


@blueprint.get("/<build_id>")
@validate_response(BuildView)
async def get_build(build_id: str) -> ResponseReturnValue:
    """A build: state, step, timing, commit, artifact and deployment; while it is queued, its
    place in the queue, why it waits and when it is expected to start (`queue`)."""
    ctx = gateway()
    build = await find_build(ctx, build_id)
    return build_view(ctx, build, await queue_status(ctx, build))


async def resources_response(ctx: GatewayContext, build: Build) -> BuildResources:
    return BuildResources(samples=await ResourceSampleStore(ctx.redis).samples(build.id))


@blueprint.get("/<build_id>/resources")
@validate_response(BuildResources)
async def get_resources(build_id: str) -> ResponseReturnValue:
    """The build's CPU and memory over time: the samples its builder published while its
    steps ran (about one a second), oldest first; empty when none were kept."""
    ctx = gateway()
    return await resources_response(ctx, await find_build(ctx, build_id))


@blueprint.get("/<build_id>/logs")
@document_querystring(LogQuery)
@document_raw_response(
    200,
    "The console output as plain text (`X-Log-Complete` says whether the build has ended).",
    content_type="text/plain",
)
@document_errors(503)
async def get_logs(build_id: str) -> ResponseReturnValue:
    """The build's console as plain text; `?follow=1` streams until the build ends."""
    ctx = gateway()
    return await log_response(ctx, await find_build(ctx, build_id))


async def log_response(ctx: GatewayContext, build: Build) -> ResponseReturnValue:
    """The build's log from storage, streamed (followed live with `?follow=1`)."""
    follow = request.args.get("follow", "").lower() in {"1", "true", "yes"}
    upstream = await open_storage_stream(
        ctx,
        log_path(build.id),
        params={"follow": "1"} if follow else None,
        read_timeout=None if follow else 30.0,
    )
    if upstream.status_code == 404:
        await upstream.aclose()
        return "", 200, {"Content-Type": "text/plain; charset=utf-8", "X-Log-Complete": "false"}
    return relay_response(upstream, [("Cache-Control", "no-cache"), ("X-Accel-Buffering", "no")])


@blueprint.get("/<build_id>/artifact")
@document_raw_response(
    200,
    "The build output as a gzip-compressed tar archive (`X-Checksum-Sha256`).",
    content_type="application/gzip",
)
@document_errors(503)
async def get_artifact(build_id: str) -> ResponseReturnValue:
    """Download the build's output archive."""
    ctx = gateway()
    return await artifact_response(ctx, await find_build(ctx, build_id))


async def artifact_response(ctx: GatewayContext, build: Build) -> ResponseReturnValue:
    """The build's output archive from storage, streamed."""
    if build.artifact is None:
        raise ApiError(404, "this build has no artifact", f"state is {build.state.value}")
    upstream = await open_storage_stream(ctx, artifact_path(build.id), read_timeout=60.0)
    if upstream.status_code != 200:
        await upstream.aclose()
        raise ApiError(404, "artifact not found in storage", build.id)
    return relay_response(upstream)


@blueprint.post("/<build_id>/cancel")
@validate_response(CancelAccepted, 202)
@document_errors(409)
async def cancel_build(build_id: str) -> ResponseReturnValue:
    """Cancel a queued or running build: one that no live builder holds is `cancelled` at
    once (the answer says so); one a builder runs is stopped by that builder."""
    ctx = gateway()
    build = await find_build(ctx, build_id, Action.BUILD_CANCEL)
    if build.state.is_terminal:
        raise ApiError(409, "build already finished", f"state is {build.state.value}")
    build = await cancellation.cancel(ctx, build)
    return CancelAccepted(build_id=build.id, state=build.state.value, cancel_requested=True), 202
