"""Retention over a data set of old and new builds and caches, with real files in storage: it
removes exactly what the policy says and nothing live; a dry run removes nothing and reports
the same; two runs at once never both remove; a run cut short is finished by the next."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aioredis

from gobuild.platform.retention_records import RETENTION_CATEGORIES
from gobuild.platform.stores.builds import BuildStore
from gobuild.platform.stores.caches import CacheIndex
from gobuild.platform.stores.retention import RetentionLock, RetentionPlans, RetentionReports
from gobuild.retention.lease import RetentionBusy
from tests.retention.conftest import MakeSweep
from tests.retention.dataset import CountingStorage, DataSet, StorageUnderTest
from tests.retention.scenario import (
    assert_kept_whole,
    assert_removed_as_planned,
    make_scenario,
    removed_ids,
)


async def test_retention_removes_exactly_what_the_policy_says_and_nothing_live(
    dataset: DataSet, storage: StorageUnderTest, redis: aioredis.Redis, make_sweep: MakeSweep
) -> None:
    scenario = await make_scenario(dataset)

    report = await make_sweep().run(dry_run=False, trigger="schedule")

    assert report.status == "completed" and not report.dry_run
    assert removed_ids(report) == scenario.expected
    assert report.skipped == []
    freed = sum(b.artifact.size for b in scenario.removed_builds if b.artifact)
    assert report.removed.artifacts.bytes == freed
    assert report.removed.logs.bytes > 0 and report.removed.deployments.bytes > 0
    assert report.bytes_freed == sum(report.removed.of(c).bytes for c in RETENTION_CATEGORIES)
    assert report.duration_seconds >= 0
    await assert_removed_as_planned(storage, redis, scenario)
    assert await RetentionReports(redis).list() == [report]
    assert await RetentionPlans(redis).unfinished() is None

    # Nothing more is due: the next run removes nothing.
    again = await make_sweep().run(dry_run=False, trigger="schedule")
    assert removed_ids(again) == {c: set() for c in RETENTION_CATEGORIES}


async def test_dry_run_removes_nothing_and_reports_the_same_set(
    dataset: DataSet, storage: StorageUnderTest, redis: aioredis.Redis, make_sweep: MakeSweep
) -> None:
    scenario = await make_scenario(dataset)

    dry = await make_sweep().run(dry_run=True, trigger="api", requested_by="admin")

    assert dry.dry_run and dry.status == "completed" and dry.requested_by == "admin"
    assert removed_ids(dry) == scenario.expected
    for build in [*scenario.removed_builds, *scenario.kept_whole]:
        await assert_kept_whole(storage, redis, build)
    assert await RetentionPlans(redis).unfinished() is None

    real = await make_sweep().run(dry_run=False, trigger="schedule")
    assert removed_ids(real) == removed_ids(dry)
    assert real.bytes_freed == dry.bytes_freed
    assert [r.id for r in await RetentionReports(redis).list()] == [real.id, dry.id]


async def test_two_concurrent_runs_do_not_remove_anything_twice(
    dataset: DataSet, storage: StorageUnderTest, redis: aioredis.Redis, make_sweep: MakeSweep
) -> None:
    scenario = await make_scenario(dataset)
    go = asyncio.Event()
    counting = CountingStorage(storage.client, go=go)
    first = asyncio.create_task(make_sweep(storage=counting).run(dry_run=False, trigger="schedule"))
    # The first run holds the lock and waits at its first removal ...
    await asyncio.sleep(0.5)
    assert not first.done()
    # ... so a second run, by the schedule or the API, does nothing.
    with pytest.raises(RetentionBusy):
        await make_sweep(storage=counting).run(dry_run=False, trigger="api")
    with pytest.raises(RetentionBusy):
        await make_sweep(storage=counting).run(dry_run=True, trigger="api")
    go.set()
    report = await first

    assert removed_ids(report) == scenario.expected
    assert set(counting.deletes.values()) == {1}
    assert len(counting.deletes) == 8  # 2 deployments, 3 artifacts, 3 logs
    assert await RetentionReports(redis).list() == [report]
    await assert_removed_as_planned(storage, redis, scenario)


async def test_a_run_cut_short_mid_way_is_finished_by_the_next_run(
    dataset: DataSet, storage: StorageUnderTest, redis: aioredis.Redis, make_sweep: MakeSweep
) -> None:
    scenario = await make_scenario(dataset)
    crashing = CountingStorage(storage.client, crash_after=3)

    with pytest.raises(RuntimeError, match="died"):
        await make_sweep(storage=crashing).run(dry_run=False, trigger="schedule")

    failed = (await RetentionReports(redis).list())[0]
    assert failed.status == "failed" and "died" in (failed.error or "")
    unfinished = await RetentionPlans(redis).unfinished()
    assert unfinished is not None and unfinished[0].id == failed.id
    # The lock was given back: the next run starts at once and takes up the plan.
    counting = CountingStorage(storage.client)
    report = await make_sweep(storage=counting).run(dry_run=False, trigger="api")

    assert report.id == failed.id and report.resumed and report.status == "completed"
    assert removed_ids(report) == scenario.expected
    # Only what the first run had not done was done again (the removal in flight at most).
    assert sum(counting.deletes.values()) == 8 - 3
    assert await RetentionPlans(redis).unfinished() is None
    await assert_removed_as_planned(storage, redis, scenario)


async def test_a_run_whose_process_died_holding_the_lock_is_taken_over_after_its_lease(
    dataset: DataSet, storage: StorageUnderTest, redis: aioredis.Redis, make_sweep: MakeSweep
) -> None:
    scenario = await make_scenario(dataset)
    crashing = CountingStorage(storage.client, crash_after=2)
    with pytest.raises(RuntimeError):
        await make_sweep(storage=crashing).run(dry_run=False, trigger="schedule")
    # A process that died cannot give the lock back: it stays taken until its lease ends.
    assert await RetentionLock(redis).acquire("token-of-a-dead-process", lease_seconds=1.0)

    with pytest.raises(RetentionBusy):
        await make_sweep().run(dry_run=False, trigger="schedule")
    await asyncio.sleep(1.2)
    report = await make_sweep().run(dry_run=False, trigger="schedule")

    assert report.resumed and removed_ids(report) == scenario.expected
    await assert_removed_as_planned(storage, redis, scenario)


async def test_what_becomes_live_after_it_was_planned_is_kept(
    dataset: DataSet, storage: StorageUnderTest, redis: aioredis.Redis, make_sweep: MakeSweep
) -> None:
    scenario = await make_scenario(dataset)
    crashing = CountingStorage(storage.client, crash_after=1)
    with pytest.raises(RuntimeError):
        await make_sweep(storage=crashing).run(dry_run=False, trigger="schedule")
    # Before the plan is finished, the middle build is shared ...
    await dataset.share(scenario.middle)

    report = await make_sweep().run(dry_run=False, trigger="schedule")

    # ... so what is left of the middle build stays, and the rest goes as planned.
    assert report.status == "completed"
    kept = {(s.category, s.id) for s in report.skipped if s.result == "kept"}
    assert ("artifacts", scenario.middle.id) in kept and ("logs", scenario.middle.id) in kept
    assert await storage.has_log(scenario.middle.id)
    assert await storage.has_artifact(scenario.middle.id)
    assert not await storage.has_log(scenario.ancient.id)
    assert await BuildStore(redis).get(scenario.ancient.id) is None


async def test_a_per_project_policy_overrides_the_instance_defaults(
    dataset: DataSet, redis: aioredis.Redis, make_sweep: MakeSweep
) -> None:
    strict = await dataset.project("strict", artifact_days=3, keep_last=0)
    lenient = await dataset.project("lenient", artifact_days=365, record_days=365)
    strict_build = await dataset.build(strict, age_days=10)
    lenient_build = await dataset.build(lenient, age_days=100)
    for project in (strict, lenient):
        for _ in range(2):
            await dataset.build(project, age_days=0.5)

    report = await make_sweep().run(dry_run=True, trigger="api")

    assert removed_ids(report)["artifacts"] == {strict_build.id}
    assert lenient_build.id not in removed_ids(report)["build_records"]


async def test_what_storage_refused_to_remove_keeps_its_record_for_the_next_run(
    dataset: DataSet, storage: StorageUnderTest, redis: aioredis.Redis, make_sweep: MakeSweep
) -> None:
    scenario = await make_scenario(dataset)
    deployment_id = scenario.ancient.deployment_id
    refusing = CountingStorage(storage.client, refuse={f"deployment:{deployment_id}"})

    report = await make_sweep(storage=refusing).run(dry_run=False, trigger="schedule")

    assert report.status == "completed"
    skipped = {(s.category, s.id, s.result) for s in report.skipped}
    assert skipped == {
        ("deployments", deployment_id, "failed"),
        ("build_records", scenario.ancient.id, "kept"),
    }
    assert await storage.has_deployment(deployment_id)  # type: ignore[arg-type]
    assert await BuildStore(redis).get(scenario.ancient.id) is not None

    retried = await make_sweep().run(dry_run=False, trigger="schedule")
    assert removed_ids(retried)["deployments"] == {deployment_id}
    assert removed_ids(retried)["build_records"] == {scenario.ancient.id}
    await assert_removed_as_planned(storage, redis, scenario)


async def test_caches_no_build_used_for_cache_days_are_removed_from_storage_and_the_index(
    dataset: DataSet, storage: StorageUnderTest, redis: aioredis.Redis, make_sweep: MakeSweep
) -> None:
    site = await dataset.project("site")
    docs = await dataset.project("docs", cache_days=60)
    old = await dataset.cache(site, "dependencies", "production-old", unused_days=20)
    old_incremental = await dataset.cache(site, "incremental", "main", unused_days=30)
    recent = await dataset.cache(site, "dependencies", "production-new", unused_days=2)
    # A project keeping its caches longer; a layer cache, which its builder prunes.
    kept_longer = await dataset.cache(docs, "dependencies", "production-old", unused_days=20)
    layer = await dataset.cache(site, "layer", "old-image", unused_days=100)
    index = CacheIndex(redis)
    gone, kept = [old, old_incremental], [recent, kept_longer]
    expected = {"dependencies/production-old", "incremental/main"}

    dry = await make_sweep().run(dry_run=True, trigger="api")

    assert removed_ids(dry)["caches"] == expected
    assert dry.removed.caches.count == 2
    assert dry.removed.caches.bytes == dry.bytes_freed == sum(e.size_bytes for e in gone)
    for entry in [*gone, *kept]:
        assert await storage.has_cache(entry)
        assert await index.get(entry.project_id, entry.kind, entry.key) == entry

    report = await make_sweep().run(dry_run=False, trigger="schedule")

    assert removed_ids(report)["caches"] == expected and report.skipped == []
    assert report.removed.caches.bytes == report.bytes_freed == dry.bytes_freed
    for entry in gone:
        assert not await storage.has_cache(entry)
        assert await index.get(entry.project_id, entry.kind, entry.key) is None
    for entry in kept:
        assert await storage.has_cache(entry)
        assert await index.get(entry.project_id, entry.kind, entry.key) == entry
    assert await index.get(site.id, "layer", layer.key) == layer
    again = await make_sweep().run(dry_run=False, trigger="schedule")
    assert removed_ids(again)["caches"] == set()


async def test_a_cache_a_build_used_after_it_was_planned_is_kept(
    dataset: DataSet, storage: StorageUnderTest, redis: aioredis.Redis, make_sweep: MakeSweep
) -> None:
    site = await dataset.project("site")
    used = await dataset.cache(site, "dependencies", "production-a", unused_days=20)
    unused = await dataset.cache(site, "dependencies", "production-b", unused_days=19)
    crashing = CountingStorage(storage.client, crash_after=0)
    with pytest.raises(RuntimeError, match="died"):
        await make_sweep(storage=crashing).run(dry_run=False, trigger="schedule")
    # Before the plan is finished (and after the removal in flight), a build uses one of them.
    index = CacheIndex(redis)
    await index.touch(used)

    report = await make_sweep().run(dry_run=False, trigger="schedule")

    assert report.resumed and removed_ids(report)["caches"] == {"dependencies/production-b"}
    assert [(s.category, s.id, s.result) for s in report.skipped] == [
        ("caches", "dependencies/production-a", "kept")
    ]
    assert await storage.has_cache(used) and not await storage.has_cache(unused)
    assert await index.get(site.id, "dependencies", used.key) is not None
    assert await index.get(site.id, "dependencies", unused.key) is None
