"""The scheduler: gives each queued build to a builder that has a free slot.

A round runs when something changed (a build queued or ended: `wake()`; a builder put a result in
the outbox: `wake_on_results`) and at least every ROUND_INTERVAL_SECONDS (a builder that appeared is
found then). It walks the queue in order: a build that ended leaves it, one cancelled or waiting
past GOBUILD_QUEUE_TIMEOUT_SECONDS ends, one held back for its project (a dependency still building,
its concurrency limit) or its labels stays without blocking the builds behind it, and any other goes
to a live builder with the labels it needs: one with an idle warm container of its project first,
then the one with the most free slots (`BuildQueue.assign`, which never gives a builder more jobs
than its slots). The round ends with a snapshot of the queue for the API.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

from aiokafka.errors import KafkaError

from gobuild.platform.build_state import BuildState, IllegalTransition
from gobuild.platform.orchestrator.dispatch import Dispatcher, build_priority
from gobuild.platform.records import Build, Project
from gobuild.platform.stores.build_queue import QueueEntry, QueueReason, QueueTicket
from gobuild.platform.stores.channels import follow_channel
from gobuild.platform.stores.claims import BuilderFleet, LiveBuilder
from gobuild.platform.stores.keys import CHANNEL_RESULTS
from gobuild.platform.stores.outbox import ResultOutbox
from gobuild.platform.waiting import wait_event

log = logging.getLogger(__name__)

ROUND_INTERVAL_SECONDS = 1.0
# The estimate of how long a build takes: the mean of the project's last RECENT_BUILDS
# finished builds, looked up again after DURATION_CACHE_SECONDS; DEFAULT_BUILD_SECONDS without.
RECENT_BUILDS = 10
DURATION_CACHE_SECONDS = 30.0
DEFAULT_BUILD_SECONDS = 60.0

Start = Literal["started", "refused", "ended"]


class BrokerUnavailable(Exception):
    """A job could not be published: the round ends, the build keeps its place."""


@dataclass
class Waiting:
    build: Build
    ticket: QueueTicket
    reason: QueueReason
    # Required labels of its project (the builders that could take it).
    labels: tuple[str, ...] = ()


@dataclass
class Round:
    """What one round knows: live builders, their free slots, each project's assigned builds."""

    live: dict[str, LiveBuilder]
    free: dict[str, int]
    per_project: Counter[str]
    projects: dict[str, Project | None] = field(default_factory=dict)
    # project id -> creation times of its unfinished builds (read once, when needed)
    unfinished: dict[str, list[datetime]] | None = None
    waiting: list[Waiting] = field(default_factory=list)
    # (builder id, project id) -> its warm containers promised to builds this round
    warm_taken: Counter[tuple[str, str]] = field(default_factory=Counter)


def _warm_for(state: Round, builder: LiveBuilder, project: Project) -> bool:
    """Whether the builder has an idle warm container of the project not yet promised to a
    build this round."""
    return builder.warm.count(project.id) > state.warm_taken[(builder.id, project.id)]


class Scheduler:
    """Runs scheduling rounds, one at a time."""

    def __init__(self, dispatcher: Dispatcher, fleet: BuilderFleet) -> None:
        self.dispatcher = dispatcher
        self.settings = dispatcher.settings
        self.builds = dispatcher.builds
        self.projects = dispatcher.projects
        self.queue = dispatcher.queue
        self.fleet = fleet
        self.outbox = ResultOutbox(self.builds.redis)
        # project id -> (mean duration of its recent builds, loop time it was read)
        self._durations: dict[str, tuple[float | None, float]] = {}

    def wake(self) -> None:
        """Run a round as soon as possible."""
        self.dispatcher.wakeup.set()

    async def wake_on_results(self) -> None:
        """Run a round as soon as a builder puts a result in the outbox: its slot is free
        before the result has come through the broker (without the channel, the result's
        arrival wakes the scheduler)."""
        await follow_channel(
            self.builds.redis, CHANNEL_RESULTS, lambda _: self.wake(), "results channel"
        )

    async def run_forever(self) -> None:
        while True:
            await wait_event(self.dispatcher.wakeup, ROUND_INTERVAL_SECONDS)
            self.dispatcher.wakeup.clear()
            try:
                await self.run_round()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("scheduling round failed; retrying next round")

    async def run_round(self) -> None:
        """Give as many queued builds to builders as their slots allow, then write the
        snapshot of what still waits."""
        now = time.time()
        state = await self._capacity()
        order = await self.queue.ordered()
        ids = [build_id for build_id, _ in order]
        builds = {b.id: b for b in await self.builds.get_many(ids)}
        tickets = await self.queue.tickets(ids)
        cancelled = await self.builds.cancels_requested(ids)
        broker_down = False
        for build_id, score in order:
            build = builds.get(build_id)
            if build is None or build.state.is_terminal:
                await self.queue.remove(build_id)
                continue
            ticket = tickets.get(build_id) or QueueTicket(
                queued_at=build.created_at.timestamp(), attempt=build.attempt + 1
            )
            if broker_down:
                state.waiting.append(Waiting(build, ticket, "broker_unavailable"))
                continue
            if not await self._still_waiting(build, ticket, now, build_id in cancelled):
                continue
            project = await self._project(state, build.project_id)
            if project is None:
                await self.dispatcher.end_unheld(
                    build, BuildState.FAILED, "the project no longer exists"
                )
                continue
            labels = tuple(project.required_labels)
            reason = await self._held_back(state, build, project)
            if reason is None:
                try:
                    started = await self._start(state, build, project, score, ticket)
                except BrokerUnavailable:
                    broker_down = True
                    started, reason = "refused", "broker_unavailable"
                if started != "refused":
                    continue
            state.waiting.append(Waiting(build, ticket, reason or "no_free_slot", labels))
        await self._write_snapshot(state, now)

    # One build ------------------------------------------------------------------------------

    async def _still_waiting(
        self, build: Build, ticket: QueueTicket, now: float, cancelled: bool
    ) -> bool:
        """End the build if it was cancelled or waited too long; whether it still waits."""
        if cancelled:
            await self.dispatcher.end_unheld(
                build, BuildState.CANCELLED, "cancelled before it started"
            )
            return False
        limit = self.settings.queue_timeout_seconds
        if now - ticket.queued_at > limit:
            # A build queued again after its builder was lost cannot go back to `queued`.
            ending = BuildState.TIMED_OUT if build.state == BuildState.QUEUED else BuildState.FAILED
            reason = f"waited in the queue for more than {limit} s"
            log.warning("build %s ends %s: %s", build.id, ending.value, reason)
            await self.dispatcher.end_unheld(build, ending, reason)
            return False
        return True

    async def _held_back(self, state: Round, build: Build, project: Project) -> QueueReason | None:
        """Why the build cannot start now, or None when a builder with a free slot can take
        it."""
        if project.depends_on and await self._dependency_unfinished(state, build, project):
            return "waiting_for_dependency"
        limit = project.concurrency_limit
        if limit is not None and state.per_project[project.id] >= limit:
            return "project_concurrency_limit"
        if project.required_labels and not any(
            b.has_labels(project.required_labels) for b in state.live.values()
        ):
            return "no_builder_with_labels"
        if self._pick(state, project) is None:
            return "no_free_slot"
        return None

    async def _dependency_unfinished(self, state: Round, build: Build, project: Project) -> bool:
        if state.unfinished is None:
            state.unfinished = {}
            active = [build_id for build_id, _ in await self.builds.active()]
            for other in await self.builds.get_many(active):
                if not other.state.is_terminal:
                    state.unfinished.setdefault(other.project_id, []).append(other.created_at)
        return any(
            created < build.created_at
            for dependency in project.depends_on
            for created in state.unfinished.get(dependency, [])
        )

    @staticmethod
    def _pick(state: Round, project: Project) -> LiveBuilder | None:
        """The live builder with the project's labels and a free slot: one with an idle warm
        container of the project first (not yet promised to a build this round), then the most
        free slots."""
        candidates = [
            b
            for b in state.live.values()
            if state.free.get(b.id, 0) > 0 and b.has_labels(project.required_labels)
        ]
        if not candidates:
            return None
        return max(
            candidates,
            key=lambda b: (_warm_for(state, b, project), state.free[b.id], b.capacity, b.id),
        )

    async def _start(
        self, state: Round, build: Build, project: Project, score: float, ticket: QueueTicket
    ) -> Start:
        builder = self._pick(state, project)
        if builder is None:
            return "refused"
        outcome = await self.queue.try_assign(
            build.id, builder.id, builder.capacity, ticket.attempt
        )
        if outcome == "gone":
            return "ended"  # another scheduler gave it out, or it ended: not this round's
        if outcome == "full":
            # Another scheduler filled the builder's slots meanwhile: not this round.
            state.free[builder.id] = 0
            return "refused"
        if _warm_for(state, builder, project):
            state.warm_taken[(builder.id, project.id)] += 1
        state.free[builder.id] -= 1
        state.per_project[project.id] += 1
        try:
            await self.dispatcher.start_job(build, project, builder.id, ticket.attempt)
        except IllegalTransition:
            await self.dispatcher.release_if_ended(build.id)  # it ended meanwhile
            return "ended"
        except (KafkaError, TimeoutError, OSError) as exc:
            log.warning(
                "build %s: its job for builder %s was not published (%r); it keeps its place",
                build.id,
                builder.id,
                exc,
            )
            await self.queue.requeue(build.id, score, ticket.attempt, ticket.queued_at)
            state.free[builder.id] += 1
            state.per_project[project.id] -= 1
            raise BrokerUnavailable from exc
        log.info(
            "build %s (#%s) given to builder %s (attempt %d)",
            build.id,
            build.number,
            builder.id,
            ticket.attempt,
        )
        return "started"

    # What the round knows -------------------------------------------------------------------

    async def _capacity(self) -> Round:
        """Live builders and their free slots; assignments of ended builds are let go."""
        live = await self.fleet.live()
        assignments = await self.queue.assignments()
        builds = {b.id: b for b in await self.builds.get_many([a.build_id for a in assignments])}
        # Results in the outbox: those builds ended on their builders (their records follow).
        ended = set(await self.outbox.build_ids())
        per_builder: Counter[str] = Counter()
        per_project: Counter[str] = Counter()
        for assignment in assignments:
            build = builds.get(assignment.build_id)
            if build is None or build.state.is_terminal:
                await self.queue.unassign(assignment.build_id)
                continue
            if build.id in ended:
                continue  # its slot is free already (`BuildQueue.assign` agrees)
            per_builder[assignment.builder_id] += 1
            per_project[build.project_id] += 1
        free = {b.id: max(0, b.capacity - per_builder[b.id]) for b in live.values()}
        return Round(live=live, free=free, per_project=per_project)

    async def _project(self, state: Round, project_id: str) -> Project | None:
        if project_id not in state.projects:
            state.projects[project_id] = await self.projects.get(project_id)
        return state.projects[project_id]

    # The snapshot ---------------------------------------------------------------------------

    async def _write_snapshot(self, state: Round, now: float) -> None:
        """Position 1..n in queue order, the reason, and when a slot is expected for each."""
        duration = await self._mean_duration({w.build.project_id for w in state.waiting})
        entries = []
        for index, waiting in enumerate(state.waiting):
            entries.append(
                QueueEntry(
                    build_id=waiting.build.id,
                    project_id=waiting.build.project_id,
                    position=index + 1,
                    priority=build_priority(waiting.build),
                    reason=waiting.reason,
                    queued_at=datetime.fromtimestamp(waiting.ticket.queued_at, UTC),
                    estimated_start=self._estimate(state, waiting, index, duration, now),
                )
            )
        await self.queue.write_snapshot(entries)

    @staticmethod
    def _estimate(
        state: Round, waiting: Waiting, ahead: int, duration: float, now: float
    ) -> datetime | None:
        """Builds ahead of it take the free slots first, then every slot in turn, each for
        about `duration`; None when no live builder could take it."""
        able = [b for b in state.live.values() if b.has_labels(waiting.labels)]
        slots = sum(b.capacity for b in able)
        if not slots:
            return None
        free = sum(state.free.get(b.id, 0) for b in able)
        turns = 0 if ahead < free else math.floor((ahead - free) / slots) + 1
        # A build that runs now is half done on average.
        wait = 0.0 if turns == 0 else (turns - 0.5) * duration
        return datetime.fromtimestamp(now + wait, UTC)

    async def _mean_duration(self, project_ids: set[str]) -> float:
        """How long a build of these projects takes, from their recent finished builds."""
        loop = asyncio.get_running_loop()
        means = []
        for project_id in project_ids:
            cached = self._durations.get(project_id)
            if cached is None or loop.time() - cached[1] > DURATION_CACHE_SECONDS:
                recent = await self.builds.list_for_project(project_id, limit=RECENT_BUILDS * 3)
                times = [
                    b.duration_seconds
                    for b in recent
                    if b.state.is_terminal and b.duration_seconds is not None
                ][:RECENT_BUILDS]
                cached = (sum(times) / len(times) if times else None, loop.time())
                self._durations[project_id] = cached
            if cached[0] is not None:
                means.append(cached[0])
        for gone in set(self._durations) - project_ids:
            del self._durations[gone]
        return sum(means) / len(means) if means else DEFAULT_BUILD_SECONDS
