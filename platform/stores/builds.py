"""Build records in Redis, the pending-trigger queue, cancel requests, and the state machine
applied to every change.

Builders number their status and completion events (`seq`); the two topics they travel on
keep no order between them, so a completion may arrive before the last progress events of its
build. The store applies a numbered event only when it is newer than every one applied before;
a late one adds what it tells to the step history and never moves the state back."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime

import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline

from gobuild.platform.build_state import BuildState, check_result_transition, check_transition
from gobuild.platform.events import BuildCompleted, BuildStatusChanged, BuildTriggered, utcnow
from gobuild.platform.records import Build, BuildStep, StepState
from gobuild.platform.stores.keys import (
    CHANNEL_CANCEL,
    KEY_ACTIVE_BUILDS,
    KEY_PENDING_TRIGGERS,
    key_build,
    key_build_attempts,
    key_build_claim,
    key_build_event_order,
    key_build_outbox,
    key_build_requeues,
    key_build_share_links,
    key_cancel_requested,
    key_project_build_seq,
    key_project_builds,
    key_trigger,
)
from gobuild.platform.stores.optimistic import optimistic_update

# Cancel requests, and the order of the events applied, are kept this long (a build that still
# has neither ended nor reported by then is long lost).
CANCEL_REQUEST_TTL_SECONDS = 7 * 24 * 3600
EVENT_ORDER_TTL_SECONDS = 7 * 24 * 3600
# (attempt, seq) of a numbered builder event.
EventOrder = tuple[int, int]


def _ended(step: BuildStep, state: StepState, at: datetime) -> BuildStep:
    """The step ended in `state` at `at`."""
    return step.model_copy(
        update={
            "state": state,
            "finished_at": at,
            "duration_seconds": max(0.0, (at - step.started_at).total_seconds()),
        }
    )


def _close_open_steps(steps: list[BuildStep], state: StepState, at: datetime) -> list[BuildStep]:
    """The steps with every running one ended in `state` at `at`."""
    return [_ended(step, state, at) if step.state == "running" else step for step in steps]


def steps_after(
    build: Build,
    state: BuildState,
    step: str | None,
    at: datetime,
    attempt: int | None = None,
) -> list[BuildStep]:
    """The build's step history after a status (or completion) event.

    A running event naming a new step ends the running one as succeeded and starts that
    step; a terminal state ends the running step in that state. Repeats change nothing, an
    event of an earlier attempt is ignored, and a later attempt (resumed after its builder
    was lost) starts the list again.
    """
    if attempt and attempt < build.attempt:
        return build.steps
    steps = [] if attempt and attempt > build.attempt else list(build.steps)
    if state == BuildState.RUNNING:
        if not step or (steps and steps[-1].name == step):
            return steps
        steps = _close_open_steps(steps, "succeeded", at)
        steps.append(BuildStep(name=step, state="running", started_at=at))
    elif state.is_terminal:
        steps = _close_open_steps(steps, state.value, at)  # type: ignore[arg-type]
    return steps


def steps_with_late_step(build: Build, step: str, at: datetime) -> list[BuildStep]:
    """The build's step history with `step`, started at `at`, put in its place: an event that
    arrived after later ones (the completion overtook it). The step that ran at `at` ends
    there and the late step runs on to where that one ended; a step known already is kept."""
    steps = list(build.steps)
    if any(known.name == step and known.started_at == at for known in steps):
        return steps
    before = [known for known in steps if known.started_at <= at]
    after = [known for known in steps if known.started_at > at]
    late = BuildStep(name=step, state="running", started_at=at)
    if before and (before[-1].finished_at is None or before[-1].finished_at > at):
        ran_on = before[-1]
        if ran_on.finished_at is not None:
            late = _ended(late, ran_on.state, ran_on.finished_at)
        before[-1] = _ended(ran_on, "succeeded", at)
    elif after:
        late = _ended(late, "succeeded", after[0].started_at)
    elif build.state.is_terminal:
        late = _ended(late, build.state.value, build.finished_at or at)  # type: ignore[arg-type]
    return [*before, late, *after]


def _late_progress(build: Build, event: BuildStatusChanged) -> Build | None:
    """What a builder's late progress event (older than one applied) still tells: when the
    build started, who ran it, the step it began. Never a state change."""
    if event.state != BuildState.RUNNING or (event.attempt or 0) < build.attempt:
        return None
    update: dict[str, object] = {}
    if build.started_at is None:
        update["started_at"] = event.occurred_at
    if build.builder_id is None and event.builder_id:
        update["builder_id"] = event.builder_id
    if event.step:
        steps = steps_with_late_step(build, event.step, event.occurred_at)
        if steps != build.steps:
            update["steps"] = steps
    return build.model_copy(update=update) if update else None


def _event_order(event: BuildStatusChanged | BuildCompleted) -> EventOrder | None:
    return None if event.seq is None else (event.attempt or 0, event.seq)


def _parse_event_order(raw: str | None) -> EventOrder:
    if not raw:
        return (0, 0)
    attempt, _, seq = raw.partition(":")
    try:
        return (int(attempt), int(seq))
    except ValueError:
        return (0, 0)


class BuildStore:
    """Build records and the state machine applied to them."""

    def __init__(self, redis: aioredis.Redis) -> None:
        self.redis = redis

    async def record_trigger(self, build: Build, trigger: BuildTriggered) -> None:
        """Durably record an accepted trigger before the gateway answers 202."""
        async with self.redis.pipeline(transaction=True) as pipe:
            self._queue_trigger_writes(pipe, build, trigger)
            await pipe.execute()

    async def record_trigger_once(self, build: Build, trigger: BuildTriggered) -> bool:
        """`record_trigger` unless a build of this id exists; whether it was recorded (a build
        whose id is derived from what caused it is then recorded once, however often that
        cause is seen)."""

        async def transaction(pipe: Pipeline) -> bool:
            if await pipe.exists(key_build(build.id)):
                return False
            pipe.multi()
            self._queue_trigger_writes(pipe, build, trigger)
            return True

        return await optimistic_update(
            self.redis, [key_build(build.id)], transaction, what=f"build {build.id}"
        )

    @staticmethod
    def _queue_trigger_writes(pipe: Pipeline, build: Build, trigger: BuildTriggered) -> None:
        pipe.set(key_build(build.id), build.model_dump_json())
        pipe.zadd(key_project_builds(build.project_id), {build.id: build.created_at.timestamp()})
        pipe.set(key_trigger(build.id), trigger.model_dump_json())
        pipe.zadd(KEY_PENDING_TRIGGERS, {build.id: utcnow().timestamp()})
        pipe.zadd(KEY_ACTIVE_BUILDS, {build.id: utcnow().timestamp()})

    async def pending_triggers(self, older_than: datetime | None = None) -> list[BuildTriggered]:
        """Triggers the orchestrator has not processed yet (oldest first)."""
        max_score = older_than.timestamp() if older_than else "+inf"
        ids = await self.redis.zrangebyscore(KEY_PENDING_TRIGGERS, "-inf", max_score)
        if not ids:
            return []
        raws = await self.redis.mget([key_trigger(i) for i in ids])
        return [BuildTriggered.model_validate_json(r) for r in raws if r]

    async def is_pending(self, build_id: str) -> bool:
        return await self.redis.zscore(KEY_PENDING_TRIGGERS, build_id) is not None

    async def forget_trigger(self, build_id: str) -> None:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.zrem(KEY_PENDING_TRIGGERS, build_id)
            pipe.delete(key_trigger(build_id))
            await pipe.execute()

    async def get(self, build_id: str) -> Build | None:
        raw = await self.redis.get(key_build(build_id))
        return Build.model_validate_json(raw) if raw else None

    async def get_many(self, build_ids: list[str]) -> list[Build]:
        """The builds of these ids that exist, in the same order."""
        if not build_ids:
            return []
        raws = await self.redis.mget([key_build(i) for i in build_ids])
        return [Build.model_validate_json(r) for r in raws if r]

    async def list_for_project(self, project_id: str, limit: int = 50) -> list[Build]:
        ids = await self.redis.zrevrange(key_project_builds(project_id), 0, limit - 1)
        if not ids:
            return []
        raws = await self.redis.mget([key_build(i) for i in ids])
        return [Build.model_validate_json(r) for r in raws if r]

    async def ids_for_project(self, project_id: str) -> list[str]:
        """Every build id of the project, newest first."""
        return await self.redis.zrevrange(key_project_builds(project_id), 0, -1)

    async def unfinished_for_project(self, project_id: str) -> list[Build]:
        """The project's unfinished builds, oldest first: its builds that are in the index of
        unfinished builds (intersected in Redis, so the cost follows the smaller of the two)."""
        ids = await self.redis.zinter(
            {key_project_builds(project_id): 1, KEY_ACTIVE_BUILDS: 0}, withscores=False
        )
        builds = await self.get_many([str(i) for i in ids])
        return [build for build in builds if not build.state.is_terminal]

    async def active(self) -> list[tuple[str, float]]:
        """Every unfinished build: (id, unix time it was last known to be attended), oldest
        first."""
        entries = await self.redis.zrange(KEY_ACTIVE_BUILDS, 0, -1, withscores=True)
        return [(build_id, float(score)) for build_id, score in entries]

    async def mark_attended(self, build_id: str) -> None:
        """Note that the unfinished build is looked after now (held, re-queued)."""
        await self.redis.zadd(KEY_ACTIVE_BUILDS, {build_id: utcnow().timestamp()}, xx=True)

    async def forget_active(self, build_id: str) -> None:
        """Drop an id from the unfinished builds (its record is gone)."""
        await self.redis.zrem(KEY_ACTIVE_BUILDS, build_id)

    async def next_number(self, project_id: str) -> int:
        return int(await self.redis.incr(key_project_build_seq(project_id)))

    async def update(self, build_id: str, **changes: object) -> Build | None:
        """Change fields other than `state` atomically (optimistic transaction)."""
        return await self._modify(build_id, lambda build: build.model_copy(update=changes))

    async def mark_superseded(self, build_id: str, by: str) -> Build | None:
        """Note on an unfinished build that build `by` supersedes it (it is being cancelled);
        None when it has ended. A build that then ends otherwise than cancelled loses the
        mark (`apply_status`)."""

        def change(build: Build) -> Build | None:
            if build.state.is_terminal or build.superseded_by == by:
                return None
            return build.model_copy(update={"superseded_by": by})

        return await self._modify(build_id, change)

    async def apply_status(self, event: BuildStatusChanged) -> Build | None:
        """Apply a status event through the state machine; repeats and illegal moves are no-ops.

        A builder's numbered event older than one applied already is late: it adds to the
        step history, never moves the state. Returns the updated build, or None when nothing
        changed.
        """

        def change(build: Build) -> Build | None:
            if build.state == event.state:
                # Not a transition: a running build reports its step (and, after a builder
                # was lost, the builder that took it over).
                if event.attempt and event.attempt < build.attempt:
                    return None  # from a builder that lost the build to a later attempt
                progress: dict[str, object] = {"step": event.step}
                if event.builder_id:
                    progress["builder_id"] = event.builder_id
                if event.attempt:
                    progress["attempt"] = event.attempt
                progress["steps"] = steps_after(
                    build, event.state, event.step, event.occurred_at, event.attempt
                )
                if all(getattr(build, k) == v for k, v in progress.items()):
                    return None
                return build.model_copy(update=progress)
            if event.builder_id:
                check_result_transition(build.state, event.state)
            else:
                check_transition(build.state, event.state)
            update: dict[str, object] = {
                "state": event.state,
                "step": event.step,
                "steps": steps_after(
                    build, event.state, event.step, event.occurred_at, event.attempt
                ),
            }
            if event.number is not None:
                update["number"] = event.number
            if event.reason:
                update["reason"] = event.reason
            if event.builder_id:
                update["builder_id"] = event.builder_id
            if event.attempt and event.attempt >= build.attempt:
                update["attempt"] = event.attempt
            if event.commit_sha:
                update["commit_sha"] = event.commit_sha
            if event.state == BuildState.RUNNING:
                update["started_at"] = event.occurred_at
            if event.state.is_terminal:
                update["finished_at"] = event.occurred_at
                if build.started_at:
                    update["duration_seconds"] = (
                        event.occurred_at - build.started_at
                    ).total_seconds()
                if event.state != BuildState.CANCELLED:
                    update["superseded_by"] = None
            return build.model_copy(update=update)

        return await self._modify(
            event.build_id,
            change,
            order=_event_order(event),
            late=lambda build: _late_progress(build, event),
        )

    async def apply_completion(self, event: BuildCompleted) -> Build | None:
        """Record the final result; the terminal state comes through the state machine.

        A completion is applied whatever its order: it is the result, and the terminal status
        that shares its number may come before or after it."""

        def change(build: Build) -> Build | None:
            if build.state != event.state:
                if event.builder_id:
                    check_result_transition(build.state, event.state)
                else:
                    check_transition(build.state, event.state)
            later_attempt = bool(event.attempt and event.attempt > build.attempt)
            return build.model_copy(
                update={
                    "state": event.state,
                    "finished_at": build.finished_at or event.occurred_at,
                    "duration_seconds": event.duration_seconds,
                    "artifact": event.artifact,
                    "deployment_id": event.deployment_id,
                    "deployment_url": event.deployment_url,
                    "reason": event.error or build.reason,
                    "commit_sha": event.commit_sha or build.commit_sha,
                    # A build that did not succeed keeps the step it ended at.
                    "step": (
                        None if event.state == BuildState.SUCCEEDED else event.step or build.step
                    ),
                    "builder_id": event.builder_id or build.builder_id,
                    "attempt": event.attempt if later_attempt else build.attempt,
                    "peak_cpu_percent": event.peak_cpu_percent,
                    "peak_memory_bytes": event.peak_memory_bytes,
                    # A completion the orchestrator made itself (time limit) knows no caches.
                    "caches": event.caches or build.caches,
                    # The step it was in ends with the build (the status event may come later).
                    "steps": steps_after(
                        build, event.state, None, event.occurred_at, event.attempt
                    ),
                    "superseded_by": (
                        build.superseded_by if event.state == BuildState.CANCELLED else None
                    ),
                }
            )

        return await self._modify(event.build_id, change, order=_event_order(event))

    async def _modify(
        self,
        build_id: str,
        change: Callable[[Build], Build | None],
        *,
        order: EventOrder | None = None,
        late: Callable[[Build], Build | None] | None = None,
    ) -> Build | None:
        """Change the record in an optimistic transaction. With `order` (a numbered builder
        event), `late` replaces `change` when a newer event was applied already."""
        key, order_key = key_build(build_id), key_build_event_order(build_id)

        async def transaction(pipe: Pipeline) -> Build | None:
            raw = await pipe.get(key)
            if raw is None:
                return None
            build = Build.model_validate_json(raw)
            newest = True
            if order is not None:
                newest = order >= _parse_event_order(await pipe.get(order_key))
            updated = change(build) if newest or late is None else late(build)
            if updated is None and not (order is not None and newest):
                return None
            pipe.multi()
            if order is not None and newest:
                pipe.set(order_key, f"{order[0]}:{order[1]}", ex=EVENT_ORDER_TTL_SECONDS)
            if updated is None:
                return None
            now = utcnow()
            updated = updated.model_copy(update={"updated_at": now})
            pipe.set(key, updated.model_dump_json())
            # The index of unfinished builds follows every change in the same transaction.
            if updated.state.is_terminal:
                pipe.zrem(KEY_ACTIVE_BUILDS, build_id)
            else:
                pipe.zadd(KEY_ACTIVE_BUILDS, {build_id: now.timestamp()})
            return updated

        watched = [key] if order is None else [key, order_key]
        return await optimistic_update(self.redis, watched, transaction, what=f"build {build_id}")

    async def request_cancel(self, build_id: str, reason: str | None = None) -> None:
        """Ask whoever runs the build to stop it (a flag, and a message on the channel builders
        listen on); `reason` is what the cancelled build will say instead of "cancelled"."""
        await self.redis.set(
            key_cancel_requested(build_id), reason or "1", ex=CANCEL_REQUEST_TTL_SECONDS
        )
        await self.redis.publish(CHANNEL_CANCEL, build_id)

    async def cancel_requested(self, build_id: str) -> bool:
        return bool(await self.redis.exists(key_cancel_requested(build_id)))

    async def cancels_requested(self, build_ids: Sequence[str]) -> set[str]:
        """Which of `build_ids` were asked to stop (one round trip for all)."""
        if not build_ids:
            return set()
        flags = await self.redis.mget([key_cancel_requested(build_id) for build_id in build_ids])
        return {build_id for build_id, flag in zip(build_ids, flags, strict=True) if flag}

    async def cancel_reason(self, build_id: str) -> str | None:
        """The reason a cancel request gave, or None (none given, or no request)."""
        raw = await self.redis.get(key_cancel_requested(build_id))
        return None if raw in (None, "1") else str(raw)

    async def remove(self, build: Build) -> None:
        """Forget a finished build: its record and every key kept for it (retention)."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.delete(
                key_build(build.id),
                key_trigger(build.id),
                key_cancel_requested(build.id),
                key_build_claim(build.id),
                key_build_attempts(build.id),
                key_build_requeues(build.id),
                key_build_outbox(build.id),
                key_build_share_links(build.id),
                key_build_event_order(build.id),
            )
            pipe.zrem(key_project_builds(build.project_id), build.id)
            pipe.zrem(KEY_PENDING_TRIGGERS, build.id)
            pipe.zrem(KEY_ACTIVE_BUILDS, build.id)
            await pipe.execute()
