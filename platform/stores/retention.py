"""Retention in Redis: each project's policy overrides, the lock runs take, the durable plan of
the unfinished run, which logs are known gone, and the reports of past runs.

Every write of a run (its plan, each step of its cursor, its report) happens only while the
run still holds the lock: the lock's key is watched and its token compared in the same
transaction, so a run that lost its lock can never move the plan on.
"""

from __future__ import annotations

from collections.abc import Iterable

import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline

from gobuild.platform.retention_records import (
    PlannedRemoval,
    RemovalOutcome,
    RetentionOverrides,
    RetentionReport,
    RetentionRun,
)
from gobuild.platform.stores.held_keys import release_if_held, renew_if_held
from gobuild.platform.stores.keys import (
    KEY_RETENTION_LOCK,
    KEY_RETENTION_OUTCOMES,
    KEY_RETENTION_PLAN,
    KEY_RETENTION_REPORTS,
    KEY_RETENTION_RUN,
    key_retention_logs_gone,
    key_retention_policy,
)
from gobuild.platform.stores.optimistic import optimistic_update

# Reports of this many past runs are kept.
REPORTS_KEPT = 200
# Planned removals written (and read) per round trip.
PLAN_BATCH = 500


class LockLost(RuntimeError):
    """The run's lock expired or was taken by another run; the run must stop."""


class RetentionPolicies:
    """Each project's overrides of the instance's retention defaults."""

    def __init__(self, redis: aioredis.Redis) -> None:
        self.redis = redis

    async def get(self, project_id: str) -> RetentionOverrides:
        raw = await self.redis.get(key_retention_policy(project_id))
        return RetentionOverrides.model_validate_json(raw) if raw else RetentionOverrides()

    async def set(self, project_id: str, overrides: RetentionOverrides) -> None:
        """Keep the overrides; none at all is the same as the defaults (nothing kept)."""
        key = key_retention_policy(project_id)
        if overrides.model_dump(exclude_none=True):
            await self.redis.set(key, overrides.model_dump_json(exclude_none=True))
        else:
            await self.redis.delete(key)


class RetentionLock:
    """The one lock every retention run takes (the job's and the API's): a token with a lease
    that only its holder may renew or release."""

    def __init__(self, redis: aioredis.Redis) -> None:
        self.redis = redis

    async def acquire(self, token: str, lease_seconds: float) -> bool:
        lease_ms = max(1, int(lease_seconds * 1000))
        return bool(await self.redis.set(KEY_RETENTION_LOCK, token, nx=True, px=lease_ms))

    async def renew(self, token: str, lease_seconds: float) -> bool:
        """Extend the lease; False when the token no longer holds the lock."""
        return await renew_if_held(self.redis, KEY_RETENTION_LOCK, token, lease_seconds)

    async def release(self, token: str) -> None:
        await release_if_held(self.redis, KEY_RETENTION_LOCK, token)


async def _check_holder(pipe: Pipeline, token: str) -> None:
    if await pipe.get(KEY_RETENTION_LOCK) != token:
        raise LockLost("another retention run holds the lock now; this one stops")


class RetentionPlans:
    """The durable plan of the unfinished run: the removals in order, a cursor, the outcomes.

    A run that dies leaves all three behind; the next run resumes at the cursor. A removal is
    done before the cursor passes it, so after a crash the one at the cursor may be done
    again: removals are idempotent.
    """

    def __init__(self, redis: aioredis.Redis) -> None:
        self.redis = redis

    async def unfinished(self) -> tuple[RetentionRun, int] | None:
        """The run a crash interrupted and its cursor, or None."""
        raw_run, cursor = await self.redis.hmget(KEY_RETENTION_RUN, ["run", "cursor"])
        if raw_run is None:
            return None
        return RetentionRun.model_validate_json(raw_run), int(cursor or 0)

    async def start(self, token: str, run: RetentionRun, removals: list[PlannedRemoval]) -> None:
        """Keep the plan of a new run (replacing nothing: there is no unfinished run)."""

        async def transaction(pipe: Pipeline) -> None:
            await _check_holder(pipe, token)
            pipe.multi()
            pipe.delete(KEY_RETENTION_PLAN, KEY_RETENTION_OUTCOMES)
            for start in range(0, len(removals), PLAN_BATCH):
                batch = removals[start : start + PLAN_BATCH]
                pipe.rpush(KEY_RETENTION_PLAN, *(r.model_dump_json() for r in batch))
            pipe.hset(KEY_RETENTION_RUN, mapping={"run": run.model_dump_json(), "cursor": 0})

        await optimistic_update(
            self.redis, [KEY_RETENTION_LOCK], transaction, what="the retention lock"
        )

    async def removals(self, start: int) -> list[PlannedRemoval]:
        """The planned removals from index `start` on (a batch of them; empty at the end)."""
        raws = await self.redis.lrange(KEY_RETENTION_PLAN, start, start + PLAN_BATCH - 1)
        return [PlannedRemoval.model_validate_json(raw) for raw in raws]

    async def advance(self, token: str, cursor: int, outcome: RemovalOutcome) -> None:
        """Record what became of the removal at `cursor` and move the cursor past it."""

        async def transaction(pipe: Pipeline) -> None:
            await _check_holder(pipe, token)
            current = int(await pipe.hget(KEY_RETENTION_RUN, "cursor") or -1)
            if current != cursor:
                raise LockLost(f"the plan's cursor is at {current}, not {cursor}")
            pipe.multi()
            pipe.rpush(KEY_RETENTION_OUTCOMES, outcome.model_dump_json())
            pipe.hset(KEY_RETENTION_RUN, "cursor", cursor + 1)

        await optimistic_update(
            self.redis, [KEY_RETENTION_LOCK, KEY_RETENTION_RUN], transaction, what="the plan"
        )

    async def outcomes(self) -> list[RemovalOutcome]:
        raws = await self.redis.lrange(KEY_RETENTION_OUTCOMES, 0, -1)
        return [RemovalOutcome.model_validate_json(raw) for raw in raws]

    async def finish(self, token: str, report: RetentionReport) -> None:
        """Keep the report and drop the plan, in one transaction."""

        async def transaction(pipe: Pipeline) -> None:
            await _check_holder(pipe, token)
            pipe.multi()
            pipe.delete(KEY_RETENTION_RUN, KEY_RETENTION_PLAN, KEY_RETENTION_OUTCOMES)
            _push_report(pipe, report)

        await optimistic_update(
            self.redis, [KEY_RETENTION_LOCK], transaction, what="the retention lock"
        )


def _push_report(pipe: Pipeline, report: RetentionReport) -> None:
    pipe.lpush(KEY_RETENTION_REPORTS, report.model_dump_json())
    pipe.ltrim(KEY_RETENTION_REPORTS, 0, REPORTS_KEPT - 1)


class RetentionReports:
    """The reports of past runs, newest first."""

    def __init__(self, redis: aioredis.Redis) -> None:
        self.redis = redis

    async def add(self, report: RetentionReport) -> None:
        """Keep the report of a run that had no plan to finish (a dry run, a failed one)."""
        async with self.redis.pipeline(transaction=True) as pipe:
            _push_report(pipe, report)
            await pipe.execute()

    async def list(self, limit: int = 20) -> list[RetentionReport]:
        raws = await self.redis.lrange(KEY_RETENTION_REPORTS, 0, limit - 1)
        return [RetentionReport.model_validate_json(raw) for raw in raws]


class GoneLogs:
    """Per project, the builds whose log retention removed or found absent, so later runs do
    not ask storage about them again."""

    def __init__(self, redis: aioredis.Redis) -> None:
        self.redis = redis

    async def of_project(self, project_id: str) -> set[str]:
        return set(await self.redis.smembers(key_retention_logs_gone(project_id)))

    async def mark(self, project_id: str, build_ids: Iterable[str]) -> None:
        ids = list(build_ids)
        if ids:
            await self.redis.sadd(key_retention_logs_gone(project_id), *ids)

    async def forget(self, project_id: str, build_id: str) -> None:
        await self.redis.srem(key_retention_logs_gone(project_id), build_id)
