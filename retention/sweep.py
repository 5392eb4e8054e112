"""A retention run, start to end: take the lock, resume the unfinished plan or make a new one,
work through it (the cursor kept in Redis after every removal), and leave a report.

The scheduled job and the gateway's `POST /api/admin/retention/run` both call
`RetentionSweep.run`; the lock lets one run at a time do anything. A dry run plans and reports
without removing or keeping a plan.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Literal

import redis.asyncio as aioredis

from gobuild.platform.auth.share_links import ShareLinkStore
from gobuild.platform.config import RetentionSettings
from gobuild.platform.events import utcnow
from gobuild.platform.records import new_id
from gobuild.platform.retention_records import (
    MAX_LISTED_IDS,
    RETENTION_CATEGORIES,
    PlannedRemoval,
    RemovalOutcome,
    RetentionReport,
    RetentionRun,
    SkippedRemoval,
)
from gobuild.platform.stores.retention import GoneLogs, RetentionPlans, RetentionReports
from gobuild.retention.lease import LEASE_SECONDS, HeldLease, hold_retention_lock
from gobuild.retention.planner import RemovalPlanner
from gobuild.retention.protection import LiveCheck
from gobuild.retention.removal import Remover
from gobuild.retention.storage_files import StorageFiles

log = logging.getLogger(__name__)

Trigger = Literal["schedule", "api"]


@dataclass
class RetentionSweep:
    """Runs retention over every project, one run at a time across all processes."""

    redis: aioredis.Redis
    storage: StorageFiles
    share_links: ShareLinkStore
    settings: RetentionSettings
    lease_seconds: float = LEASE_SECONDS

    async def run(
        self, *, dry_run: bool, trigger: Trigger, requested_by: str | None = None
    ) -> RetentionReport:
        """Run now and return the report (also kept in Redis). Raises `RetentionBusy` when
        another run holds the lock; any other failure is reported (status `failed`) and
        raised, and a real run's plan stays for the next run to finish."""
        async with hold_retention_lock(self.redis, self.lease_seconds) as lease:
            run = RetentionRun(
                id=new_id("r_"), started_at=utcnow(), trigger=trigger, requested_by=requested_by
            )
            started = time.monotonic()
            try:
                if dry_run:
                    report = await self._dry_run(run, started)
                else:
                    report = await self._real_run(run, started, lease)
            except Exception as exc:
                log.exception("retention run %s failed", run.id)
                await self._report_failure(run, started, exc, dry_run=dry_run)
                raise
        log.info(
            "retention run %s %s %d item(s), %d bytes",
            report.id,
            "would remove" if dry_run else "removed",
            sum(report.removed.of(c).count for c in RETENTION_CATEGORIES),
            report.bytes_freed,
        )
        return report

    async def _dry_run(self, run: RetentionRun, started: float) -> RetentionReport:
        """Plan, and report the plan as what would be removed; nothing is kept but the report."""
        plan = await self._planner().plan(run.started_at)
        report = _report(run, started, dry_run=True)
        _add_outcomes(report, [_planned(r) for r in plan.removals])
        await RetentionReports(self.redis).add(report)
        return report

    async def _real_run(
        self, run: RetentionRun, started: float, lease: HeldLease
    ) -> RetentionReport:
        """Finish the unfinished plan if there is one, else plan and work through that."""
        plans = RetentionPlans(self.redis)
        unfinished = await plans.unfinished()
        resumed = unfinished is not None
        if unfinished is not None:
            interrupted, cursor = unfinished
            # The report is the interrupted run's, covering its whole plan.
            run.id, run.started_at = interrupted.id, interrupted.started_at
            log.info("retention resumes run %s at removal %d", run.id, cursor)
        else:
            cursor = 0
            plan = await self._planner().plan(run.started_at)
            for project_id, build_ids in plan.absent_logs.items():
                await GoneLogs(self.redis).mark(project_id, build_ids)
            await plans.start(lease.token, run, plan.removals)
        await self._work_through(plans, lease, cursor)
        report = _report(run, started, dry_run=False, resumed=resumed)
        _add_outcomes(report, await plans.outcomes())
        await plans.finish(lease.token, report)
        return report

    async def _report_failure(
        self, run: RetentionRun, started: float, exc: Exception, *, dry_run: bool
    ) -> None:
        """Keep a `failed` report with what was removed before the failure."""
        report = _report(run, started, dry_run=dry_run)
        report.status = "failed"
        report.error = f"{type(exc).__name__}: {exc}"
        try:
            if not dry_run:
                _add_outcomes(report, await RetentionPlans(self.redis).outcomes())
            await RetentionReports(self.redis).add(report)
        except Exception as report_error:
            log.warning("the report of failed retention run %s was lost: %s", run.id, report_error)

    def _planner(self) -> RemovalPlanner:
        return RemovalPlanner(self.redis, self.storage, self._live(), self.settings)

    def _live(self) -> LiveCheck:
        return LiveCheck(self.redis, self.share_links)

    async def _work_through(self, plans: RetentionPlans, lease: HeldLease, cursor: int) -> None:
        remover = Remover(self.redis, self.storage, self._live())
        # A record whose files could not be removed stays, so the next run finds them again.
        failed_builds = {o.removal.build_id for o in await plans.outcomes() if o.result == "failed"}
        while batch := await plans.removals(cursor):
            for removal in batch:
                lease.check()
                if removal.category == "build_records" and removal.build_id in failed_builds:
                    outcome = RemovalOutcome(
                        removal=removal,
                        result="kept",
                        detail="some of its files could not be removed; the next run retries",
                    )
                else:
                    outcome = await remover.remove(removal)
                if outcome.result == "failed":
                    failed_builds.add(removal.build_id)
                await plans.advance(lease.token, cursor, outcome)
                cursor += 1


def _report(
    run: RetentionRun, started: float, *, dry_run: bool, resumed: bool = False
) -> RetentionReport:
    return RetentionReport(
        id=run.id,
        dry_run=dry_run,
        status="completed",
        trigger=run.trigger,
        requested_by=run.requested_by,
        started_at=run.started_at,
        finished_at=utcnow(),
        duration_seconds=round(time.monotonic() - started, 3),
        resumed=resumed,
    )


def _planned(removal: PlannedRemoval) -> RemovalOutcome:
    """What a dry run reports for a planned removal: removed (would be)."""
    return RemovalOutcome(removal=removal, result="removed")


def _add_outcomes(report: RetentionReport, outcomes: list[RemovalOutcome]) -> None:
    for outcome in outcomes:
        removal = outcome.removal
        if outcome.result == "removed":
            report.removed.of(removal.category).add(removal)
            report.bytes_freed += removal.bytes
        elif len(report.skipped) < MAX_LISTED_IDS:
            report.skipped.append(
                SkippedRemoval(
                    category=removal.category,
                    id=removal.subject,
                    result=outcome.result,
                    detail=outcome.detail,
                )
            )
