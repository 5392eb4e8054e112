"""The retention service: an APScheduler job that runs `RetentionSweep` every
GOBUILD_RETENTION_INTERVAL_MINUTES (or on GOBUILD_RETENTION_CRON), and `/healthz`.

A plan left unfinished by a crash is resumed right at start. The running sweep is tracked and
cancelled on shutdown (its plan stays for the next start).
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime

import httpx
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger
from quart import Quart

from gobuild.platform.auth.share_links import ShareLinkStore
from gobuild.platform.auth.signing import load_signing_secret
from gobuild.platform.config import AuthSettings, RetentionSettings, Settings
from gobuild.platform.storage_client import StorageClient, require_internal_token
from gobuild.platform.stores.connection import connect_redis
from gobuild.platform.stores.retention import RetentionPlans
from gobuild.platform.waiting import cancel_and_wait
from gobuild.retention.lease import RetentionBusy
from gobuild.retention.sweep import RetentionSweep

log = logging.getLogger(__name__)

JOB_ID = "retention"
# A run that could not start on time (the process was busy or down) still runs this late.
MISFIRE_GRACE_SECONDS = 3600


def schedule_trigger(settings: RetentionSettings) -> BaseTrigger:
    """The crontab line when one is set, else the interval."""
    if settings.retention_cron:
        return CronTrigger.from_crontab(settings.retention_cron, timezone=UTC)
    return IntervalTrigger(minutes=settings.retention_interval_minutes, timezone=UTC)


def create_app(
    settings: Settings,
    retention_settings: RetentionSettings | None = None,
    auth_settings: AuthSettings | None = None,
) -> Quart:
    require_internal_token(settings, "retention")  # storage answers nothing without it
    retention_settings = retention_settings or RetentionSettings()
    auth_settings = auth_settings or AuthSettings()
    app = Quart(__name__)
    scheduler = AsyncIOScheduler(timezone=UTC)
    running: set[asyncio.Task[object]] = set()

    @app.get("/healthz")
    async def healthz() -> tuple[dict[str, object], int]:
        job = scheduler.get_job(JOB_ID) if scheduler.running else None
        next_run = job.next_run_time.isoformat() if job and job.next_run_time else None
        body = {
            "status": "ok" if job else "starting",
            "next_run_at": next_run,
            "dry_run": retention_settings.retention_dry_run,
            "running": bool(running),
        }
        return body, 200 if job else 503

    @app.before_serving
    async def _start() -> None:
        redis = connect_redis(settings.redis_url)
        http = httpx.AsyncClient()
        secret = await load_signing_secret(redis, auth_settings)
        sweep = RetentionSweep(
            redis=redis,
            storage=StorageClient(http, settings),
            share_links=ShareLinkStore(redis, auth_settings, secret),
            settings=retention_settings,
        )
        app.extensions[JOB_ID] = (redis, http)

        async def scheduled_run() -> None:
            task = asyncio.current_task()
            assert task is not None
            running.add(task)
            try:
                await sweep.run(dry_run=retention_settings.retention_dry_run, trigger="schedule")
            except RetentionBusy:
                log.info("another retention run is in progress; this one is skipped")
            except Exception as exc:
                # Reported by the sweep when it got that far; the next run tries again.
                log.warning("retention run failed: %s: %s", type(exc).__name__, exc)
            finally:
                running.discard(task)

        resume = await RetentionPlans(redis).unfinished() is not None
        scheduler.add_job(
            scheduled_run,
            schedule_trigger(retention_settings),
            id=JOB_ID,
            name="retention run",
            max_instances=1,
            coalesce=True,
            misfire_grace_time=MISFIRE_GRACE_SECONDS,
            # A plan a crash left unfinished is finished now, not at the next slot.
            **({"next_run_time": datetime.now(UTC)} if resume else {}),
        )
        scheduler.start()
        job = scheduler.get_job(JOB_ID)
        log.info(
            "retention scheduled (%s); next run at %s%s",
            job.trigger if job else "?",
            job.next_run_time if job else "?",
            ", dry run" if retention_settings.retention_dry_run else "",
        )

    @app.after_serving
    async def _stop() -> None:
        if scheduler.running:
            scheduler.shutdown(wait=False)
        await cancel_and_wait(list(running))
        connections = app.extensions.pop(JOB_ID, None)
        if connections is not None:
            redis, http = connections
            await http.aclose()
            await redis.aclose()

    return app
