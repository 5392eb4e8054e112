"""Reconciling the unfinished builds with what really goes on, so that none stays unfinished
after its builder, its job or its result was lost (a dead builder, a broker that lost its data).

Each round looks at every build in the index of unfinished builds:

- `queued`: left to the sweep of pending triggers;
- its builder's result waits in the outbox: builders deliver it; with no live builder to do
  so (or none could for as long as a build may take), the orchestrator applies it itself;
- `running` past the time limit plus the grace: ended `timed_out` (a builder still at it is
  told to cancel);
- held by a live builder: attended;
- held by no live builder for longer than the grace: requested again when a live builder has
  a free slot (else it waits for one), and `failed` once it used up `build_max_attempts`.

A request sent again cannot run the build twice: a builder runs a build only under its claim,
never once it ended, and never while its result waits in the outbox.
"""

from __future__ import annotations

import asyncio
import logging
import time

from aiokafka.errors import KafkaError

from gobuild.platform.build_endings import end_unheld_build
from gobuild.platform.build_state import BuildState, IllegalTransition
from gobuild.platform.events import TOPIC_BUILD_COMPLETIONS, TOPIC_BUILD_STATUS
from gobuild.platform.orchestrator.dispatch import Dispatcher
from gobuild.platform.records import Build
from gobuild.platform.stores.claims import BuilderFleet, LiveBuilder
from gobuild.platform.stores.outbox import PendingResult, ResultOutbox

log = logging.getLogger(__name__)


class Reconciler:
    """One reconcile round at a time over the unfinished builds."""

    def __init__(self, dispatcher: Dispatcher, fleet: BuilderFleet, outbox: ResultOutbox) -> None:
        self.dispatcher = dispatcher
        self.builds = dispatcher.builds
        self.settings = dispatcher.settings
        self.fleet = fleet
        self.outbox = outbox

    async def reconcile(self) -> None:
        """Look at every unfinished build once."""
        live = await self.fleet.live()
        for build_id, attended_at in await self.builds.active():
            try:
                await self._reconcile_build(build_id, attended_at, live)
            except (KafkaError, TimeoutError, OSError) as exc:
                log.warning("reconcile: build %s left for the next round (%r)", build_id, exc)

    async def run_forever(self) -> None:
        while True:
            await asyncio.sleep(self.settings.reconcile_interval_seconds)
            try:
                await self.reconcile()
            except Exception:
                log.exception("reconcile round failed; retrying next round")

    async def _reconcile_build(
        self, build_id: str, attended_at: float, live: dict[str, LiveBuilder]
    ) -> None:
        grace = self.settings.reconcile_grace_seconds
        now = time.time()
        build = await self.builds.get(build_id)
        if build is None or build.state.is_terminal:
            await self.builds.forget_active(build_id)
            return
        if build.state == BuildState.QUEUED:
            return
        limit = self.settings.build_timeout_seconds
        result = await self.outbox.get(build_id)
        if result is not None:
            # Builders deliver it; this service applies it when none is left to, or when they
            # could not (the broker down) for as long as a build may take.
            waited = now - result.written_at.timestamp()
            if waited > grace and (not live or waited > limit):
                await self._apply_result(result)
            return
        started = build.started_at.timestamp() if build.started_at else None
        if build.state == BuildState.RUNNING and started and now > started + limit + grace:
            await self.builds.request_cancel(build.id)  # a builder still at it stops
            await self._end(
                build,
                BuildState.TIMED_OUT,
                f"no result within the time limit of {limit} s and {grace:g} s of grace",
            )
            return
        if await self.fleet.holder(build.id) is not None:
            await self.builds.mark_attended(build.id)
            return
        if now - attended_at < grace:
            return
        if not any(builder.has_free_slot for builder in live.values()):
            return  # no builder could take it now; one that frees up gets it
        await self._request_again(build)

    async def _request_again(self, build: Build) -> None:
        attempts = 1 + await self.builds.count_requeue(build.id)
        maximum = self.settings.build_max_attempts
        if attempts > maximum:
            await self._end(
                build,
                BuildState.FAILED,
                f"its builder or its job was lost {maximum} times; gave up",
            )
            return
        project = await self.dispatcher.projects.get(build.project_id)
        if project is None:
            await self._end(build, BuildState.FAILED, "the project no longer exists")
            return
        log.info(
            "reconcile: no builder holds build %s (%s); requesting it again (attempt %d of %d)",
            build.id,
            build.state.value,
            attempts,
            maximum,
        )
        await self.dispatcher.publish_request(build, project)
        await self.builds.mark_attended(build.id)

    async def _apply_result(self, result: PendingResult) -> None:
        """Apply a result no live builder is left to deliver, and publish it."""
        log.info("reconcile: applying the result of build %s left by its builder", result.build_id)
        try:
            await self.builds.apply_completion(result.completion)
            await self.builds.apply_status(result.status)
        except IllegalTransition as exc:
            log.warning("reconcile: result of build %s not applied: %s", result.build_id, exc)
        for topic, event in (
            (TOPIC_BUILD_COMPLETIONS, result.completion),
            (TOPIC_BUILD_STATUS, result.status),
        ):
            try:
                await self.dispatcher.producer.publish(topic, event)
            except (KafkaError, TimeoutError, OSError) as exc:
                log.warning("reconcile: %s of %s not published: %r", topic, result.build_id, exc)
        await self.outbox.remove(result.build_id)

    async def _end(self, build: Build, state: BuildState, reason: str) -> None:
        log.warning("reconcile: build %s ends %s: %s", build.id, state.value, reason)
        await end_unheld_build(self.builds, self.dispatcher.producer, build, state, reason)
