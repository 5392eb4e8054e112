"""Cancelling a build: one a live builder holds is stopped by that builder; one that no live
builder holds (queued, dispatched and not claimed yet, running on a builder that is gone) ends
`cancelled` at once, since nobody else would end it."""

from __future__ import annotations

from gobuild.platform.build_endings import end_unheld_build
from gobuild.platform.build_state import BuildState
from gobuild.platform.gateway.context import GatewayContext
from gobuild.platform.records import Build
from gobuild.platform.stores.claims import BuilderFleet


async def cancel(ctx: GatewayContext, build: Build) -> Build:
    """Cancel an unfinished build; the build as it is afterwards.

    The cancel request (a flag, and a message on the channel builders listen on) is made in
    every case: a builder that claims the build later, or still runs it, stops it.
    """
    await ctx.builds.request_cancel(build.id)
    if await BuilderFleet(ctx.redis).holder(build.id) is not None:
        return build
    reason = (
        "cancelled; no builder was running it"
        if build.state == BuildState.RUNNING
        else "cancelled before it started"
    )
    ended = await end_unheld_build(ctx.builds, ctx.producer, build, BuildState.CANCELLED, reason)
    if ended is None:
        return await ctx.builds.get(build.id) or build
    await ctx.builds.forget_trigger(build.id)
    return ended
