"""The retention service (`python -m gobuild.retention`): its schedule and settings, its
health, and a plan a crash left unfinished taken up as soon as it starts."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
import redis.asyncio as aioredis
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from gobuild.platform.config import AuthSettings, Settings
from gobuild.platform.stores.retention import RetentionPlans, RetentionReports
from gobuild.retention.app import create_app, schedule_trigger
from tests.conftest import wait_until
from tests.retention.conftest import MakeSweep, retention_settings, served_storage
from tests.retention.dataset import CountingStorage, DataSet, StorageUnderTest
from tests.retention.scenario import assert_removed_as_planned, make_scenario

AUTH = AuthSettings(_env_file=None, jwt_secret="retention-service-test-secret-0123456789")  # type: ignore[call-arg]


def test_the_schedule_is_the_crontab_line_when_set_else_the_interval() -> None:
    assert isinstance(schedule_trigger(retention_settings()), IntervalTrigger)
    nightly = schedule_trigger(retention_settings(retention_cron="0 3 * * *"))
    assert isinstance(nightly, CronTrigger)
    after = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
    assert nightly.get_next_fire_time(None, after) == datetime(2030, 1, 2, 3, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("overrides", "complaint"),
    [
        ({"retention_cron": "every night"}, "GOBUILD_RETENTION_CRON"),
        ({"retention_record_days": 10}, "GOBUILD_RETENTION_RECORD_DAYS"),
        ({"retention_artifact_days": 0}, "retention_artifact_days"),
    ],
)
def test_a_retention_setting_that_makes_no_sense_is_refused_saying_which(
    overrides: dict[str, object], complaint: str
) -> None:
    with pytest.raises(ValueError, match=complaint):
        retention_settings(**overrides)


async def test_the_service_reports_its_next_run_on_healthz(
    make_settings: Callable[..., Settings], redis_url: str
) -> None:
    settings = make_settings(redis_url=redis_url)
    app = create_app(settings, retention_settings(retention_interval_minutes=90), AUTH)
    async with app.test_app() as test_app:
        response = await test_app.test_client().get("/healthz")
        assert response.status_code == 200
        body = await response.get_json()
    assert body["status"] == "ok" and body["dry_run"] is False
    next_run = datetime.fromisoformat(body["next_run_at"])
    expected = datetime.now(UTC) + timedelta(minutes=90)
    assert abs((next_run - expected).total_seconds()) < 30


async def test_the_service_finishes_a_plan_left_by_a_crash_as_soon_as_it_starts(
    dataset: DataSet,
    storage: StorageUnderTest,
    redis: aioredis.Redis,
    make_sweep: MakeSweep,
    make_settings: Callable[..., Settings],
    redis_url: str,
) -> None:
    scenario = await make_scenario(dataset)
    with pytest.raises(RuntimeError):
        await make_sweep(storage=CountingStorage(storage.client, crash_after=4)).run(
            dry_run=False, trigger="schedule"
        )
    assert await RetentionPlans(redis).unfinished() is not None
    # Same data folder as the data set's storage; served by URL, as the service reaches it.
    settings = make_settings(redis_url=redis_url)
    assert settings.data_dir == storage.settings.data_dir

    async with (
        served_storage(settings),
        create_app(settings, retention_settings(), AUTH).test_app(),
    ):

        async def finished() -> bool:
            reports = await RetentionReports(redis).list()
            return bool(reports) and reports[0].status == "completed"

        await wait_until(finished, message="the service did not finish the plan")

    report = (await RetentionReports(redis).list())[0]
    assert report.resumed and report.trigger == "schedule"
    await assert_removed_as_planned(storage, redis, scenario)
