"""Reconciling the scheduler's assignments and the unfinished builds with what really goes on,
so that none stays unfinished after its builder, its job or its result was lost (a dead
builder, a broker that lost its data).

The leases, every round, for each build the scheduler gave a builder:

- the build ended: the assignment ends (the slot is free);
- a live builder holds its claim, or its result waits in the outbox: attended;
- its builder is lost (no heartbeat) and no live builder holds it: queued again at the front
  with one more attempt, or ended `failed` once its builder was lost `build_max_attempts` times;
- its live builder has not claimed it within `dispatch_claim_timeout_seconds`: the same job is
  sent to the same builder again (it was lost on the way, as with a broker restart).

Then every unfinished build:

- its builder's result waits in the outbox: builders deliver it; with no live builder to do
  so (or none could for as long as a build may take), the orchestrator applies it itself;
- `running` past its time limit (the instance's, or its project's when lower) plus the grace:
  ended `timed_out` (a builder still at it is told to cancel);
- neither queued, nor assigned, nor held, nor pending as a trigger for longer than the grace
  (left by an orchestrator before the scheduler, or a crash in between): queued again.

A job sent again cannot run the build twice: a builder runs a build only under its claim and
while the scheduler's assignment names it, never once it ended, and never while its result
waits in the outbox.
"""

from __future__ import annotations

import asyncio
import logging
import time

from aiokafka.errors import KafkaError

from gobuild.platform.build_state import BuildState, IllegalTransition
from gobuild.platform.events import TOPIC_BUILD_COMPLETIONS, TOPIC_BUILD_STATUS
from gobuild.platform.orchestrator.dispatch import Dispatcher, effective_time_limit
from gobuild.platform.records import Build
from gobuild.platform.stores.build_queue import Assignment
from gobuild.platform.stores.claims import BuilderFleet, LiveBuilder
from gobuild.platform.stores.outbox import PendingResult, ResultOutbox

log = logging.getLogger(__name__)

# The leases are looked at at least this often (more often than the reconcile when it is slow).
LEASE_INTERVAL_SECONDS = 2.0


class Reconciler:
    """One reconcile round at a time over the assignments and the unfinished builds."""

    def __init__(self, dispatcher: Dispatcher, fleet: BuilderFleet, outbox: ResultOutbox) -> None:
        self.dispatcher = dispatcher
        self.builds = dispatcher.builds
        self.queue = dispatcher.queue
        self.settings = dispatcher.settings
        self.fleet = fleet
        self.outbox = outbox

    async def reconcile(self) -> None:
        """Look at every assignment and every unfinished build once."""
        live = await self.fleet.live()
        await self.check_leases(live)
        for build_id, attended_at in await self.builds.active():
            try:
                await self._reconcile_build(build_id, attended_at, live)
            except (KafkaError, TimeoutError, OSError) as exc:
                log.warning("reconcile: build %s left for the next round (%r)", build_id, exc)

    async def check_leases(self, live: dict[str, LiveBuilder] | None = None) -> None:
        """Look at every assignment once."""
        if live is None:
            live = await self.fleet.live()
        for assignment in await self.queue.assignments():
            try:
                await self._check_lease(assignment, live)
            except (KafkaError, TimeoutError, OSError) as exc:
                log.warning(
                    "reconcile: lease of build %s left for the next round (%r)",
                    assignment.build_id,
                    exc,
                )

    async def run_forever(self) -> None:
        interval = self.settings.reconcile_interval_seconds
        lease_interval = min(interval, LEASE_INTERVAL_SECONDS)
        loop = asyncio.get_running_loop()
        next_reconcile = loop.time() + interval
        while True:
            await asyncio.sleep(lease_interval)
            try:
                if loop.time() >= next_reconcile:
                    next_reconcile = loop.time() + interval
                    await self.reconcile()
                else:
                    await self.check_leases()
            except Exception:
                log.exception("reconcile round failed; retrying next round")

    # Leases ---------------------------------------------------------------------------------

    async def _check_lease(self, assignment: Assignment, live: dict[str, LiveBuilder]) -> None:
        build = await self.builds.get(assignment.build_id)
        if build is None or build.state.is_terminal:
            await self.dispatcher.release(assignment.build_id)
            return
        if await self.outbox.holds(build.id):
            return  # it ran; its result is on its way (or applied below)
        if await self.fleet.holder(build.id) is not None:
            await self.builds.mark_attended(build.id)
            return
        if assignment.builder_id not in live:
            await self._builder_lost(build, assignment)
            return
        waited = time.time() - assignment.last_sent_at
        if waited > self.settings.dispatch_claim_timeout_seconds:
            await self._send_again(build, assignment)

    async def _builder_lost(self, build: Build, assignment: Assignment) -> None:
        lost = assignment.attempt
        if lost >= self.settings.build_max_attempts:
            await self._end(build, BuildState.FAILED, f"its builder was lost {lost} times")
            return
        log.info(
            "reconcile: builder %s of build %s is lost; queueing it again (attempt %d of %d)",
            assignment.builder_id,
            build.id,
            lost + 1,
            self.settings.build_max_attempts,
        )
        await self.queue.requeue(build.id, await self.queue.front_score(), attempt=lost + 1)
        await self.builds.mark_attended(build.id)
        self.dispatcher.wakeup.set()

    async def _send_again(self, build: Build, assignment: Assignment) -> None:
        project = await self.dispatcher.projects.get(build.project_id)
        if project is None:
            await self._end(build, BuildState.FAILED, "the project no longer exists")
            return
        log.info(
            "reconcile: builder %s has not claimed build %s; sending its job again",
            assignment.builder_id,
            build.id,
        )
        try:
            await self.dispatcher.start_job(
                build, project, assignment.builder_id, assignment.attempt
            )
        except IllegalTransition:
            await self.dispatcher.release_if_ended(build.id)
            return
        await self.queue.mark_sent(assignment)
        await self.builds.mark_attended(build.id)

    # Unfinished builds ----------------------------------------------------------------------

    async def _reconcile_build(
        self, build_id: str, attended_at: float, live: dict[str, LiveBuilder]
    ) -> None:
        grace = self.settings.reconcile_grace_seconds
        now = time.time()
        build = await self.builds.get(build_id)
        if build is None or build.state.is_terminal:
            await self.builds.forget_active(build_id)
            return
        queued = await self.queue.is_queued(build.id)
        assigned = await self.queue.assignment(build.id) is not None
        if build.state == BuildState.QUEUED:
            placed = queued or assigned or await self.builds.is_pending(build.id)
            if not placed and now - attended_at > grace:
                await self._queue_again(build, attempt=build.attempt + 1)
            return
        project = await self.dispatcher.projects.get(build.project_id)
        limit = effective_time_limit(self.settings, project)
        result = await self.outbox.get(build_id)
        if result is not None:
            # Builders deliver it; this service applies it when none is left to, or when they
            # could not (the broker down) for as long as a build may take.
            waited = now - result.written_at.timestamp()
            if waited > grace and (not live or waited > limit):
                await self._apply_result(result)
            return
        if queued:
            return  # waits for a builder again; the queue timeout applies
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
        if assigned or now - attended_at < grace:
            return  # the lease looks after it
        attempt = build.attempt + 1
        if attempt > self.settings.build_max_attempts:
            await self._end(build, BuildState.FAILED, f"its builder was lost {build.attempt} times")
            return
        await self._queue_again(build, attempt)

    async def _queue_again(self, build: Build, attempt: int) -> None:
        """Queue a build nobody looks after; one under way goes to the front."""
        log.info("reconcile: nobody looks after build %s (%s); queueing it", build.id, build.state)
        if build.state == BuildState.QUEUED:
            await self.dispatcher.enqueue(build)
        else:
            await self.queue.requeue(build.id, await self.queue.front_score(), attempt=attempt)
        await self.builds.mark_attended(build.id)
        self.dispatcher.wakeup.set()

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
        await self.dispatcher.release_if_ended(result.build_id)

    async def _end(self, build: Build, state: BuildState, reason: str) -> None:
        log.warning("reconcile: build %s ends %s: %s", build.id, state.value, reason)
        await self.dispatcher.end_unheld(build, state, reason)
