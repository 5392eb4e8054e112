"""Cancelling an unfinished build, for the gateway (a user's cancel) and the orchestrator (a
newer push superseding a branch's builds).

The cancel request (a flag, and a message on the channel builders listen on) is made in every
case: a builder that runs the build, or claims it later, stops it. A build that no live builder
holds (queued, dispatched and not claimed yet, running on a builder that is gone) ends
`cancelled` at once, since nobody else would end it, and leaves the scheduler's queue.
"""

from __future__ import annotations

from gobuild.platform.build_endings import end_unheld_build
from gobuild.platform.build_state import BuildState
from gobuild.platform.bus import EventProducer
from gobuild.platform.records import Build
from gobuild.platform.stores.build_queue import BuildQueue
from gobuild.platform.stores.builds import BuildStore
from gobuild.platform.stores.claims import BuilderFleet


async def cancel_build(
    builds: BuildStore,
    producer: EventProducer,
    build: Build,
    *,
    reason: str | None = None,
    superseded_by: str | None = None,
) -> Build:
    """Cancel an unfinished build; the build as it is afterwards (still unfinished when a live
    builder holds it: that builder ends it).

    `reason` is what the cancelled build says (default: that it was cancelled before it
    started, or with no builder running it); `superseded_by` is the id of the newer build that
    made it pointless, noted on the record.
    """
    if superseded_by is not None:
        build = await builds.mark_superseded(build.id, superseded_by) or build
    await builds.request_cancel(build.id, reason)
    if await BuilderFleet(builds.redis).holder(build.id) is not None:
        return build
    if reason is None:
        reason = (
            "cancelled; no builder was running it"
            if build.state == BuildState.RUNNING
            else "cancelled before it started"
        )
    ended = await end_unheld_build(builds, producer, build, BuildState.CANCELLED, reason)
    await BuildQueue(builds.redis).remove(build.id)
    if ended is None:
        return await builds.get(build.id) or build
    await builds.forget_trigger(build.id)
    return ended
