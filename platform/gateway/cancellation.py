"""Cancelling a build from the API: one a live builder holds is stopped by that builder; one that
no live builder holds ends `cancelled` at once (`gobuild.platform.build_cancellation`)."""

from __future__ import annotations

from gobuild.platform.build_cancellation import cancel_build
from gobuild.platform.gateway.context import GatewayContext
from gobuild.platform.records import Build


async def cancel(ctx: GatewayContext, build: Build) -> Build:
    """Cancel an unfinished build; the build as it is afterwards."""
    return await cancel_build(ctx.builds, ctx.producer, build)
