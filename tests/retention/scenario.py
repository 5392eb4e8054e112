"""The data set most retention tests use: one project with builds of every kind (old, live,
new) and one keeping its last builds by its own policy, and what the policy makes of them."""

from __future__ import annotations

from dataclasses import dataclass

import redis.asyncio as aioredis

from gobuild.platform.build_state import BuildState
from gobuild.platform.records import Build
from gobuild.platform.retention_records import RETENTION_CATEGORIES, RetentionReport
from gobuild.platform.stores.builds import BuildStore
from gobuild.platform.stores.deployment_records import DeploymentRecords
from tests.retention.dataset import DataSet, StorageUnderTest


@dataclass
class Scenario:
    """The builds of the data set by what the policy makes of them."""

    ancient: Build  # 200 days: everything goes (deployment, artifact, log, record)
    pinned: Build  # 150 days, the pinned production alias: kept whole
    shared: Build  # 120 days, a live share link: kept whole
    running: Build  # 100 days and still running: kept whole
    middle: Build  # 60 days: deployment, artifact and log go, the record stays
    head: Build  # 50 days, the production head (the alias follows it once un-pinned): kept
    recent: Build  # 5 days: kept
    newest: list[Build]  # 1 day: kept (and the newest is kept whatever its age)
    docs_oldest: Build  # another project keeping its last 2: this one of 3 goes entirely
    docs_kept: list[Build]  # 100 days old, but the project keeps its newest 2

    @property
    def removed_builds(self) -> list[Build]:
        return [self.ancient, self.middle, self.docs_oldest]

    @property
    def expected(self) -> dict[str, set[str]]:
        return {
            "deployments": {self.ancient.deployment_id, self.middle.deployment_id},  # type: ignore[arg-type]
            "artifacts": {b.id for b in self.removed_builds},
            "logs": {b.id for b in self.removed_builds},
            "build_records": {self.ancient.id, self.docs_oldest.id},
            "caches": set(),
        }

    @property
    def kept_whole(self) -> list[Build]:
        return [
            self.pinned,
            self.shared,
            self.running,
            self.head,
            self.recent,
            *self.newest,
            *self.docs_kept,
        ]


async def make_scenario(dataset: DataSet) -> Scenario:
    site = await dataset.project("site")
    ancient = await dataset.build(site, age_days=200, deploy=True)
    pinned = await dataset.build(site, age_days=150, deploy=True)
    shared = await dataset.build(site, age_days=120, state=BuildState.FAILED)
    running = await dataset.build(site, age_days=100, state=BuildState.RUNNING, artifact=False)
    middle = await dataset.build(site, age_days=60, deploy=True)
    head = await dataset.build(site, age_days=50, deploy=True)
    recent = await dataset.build(site, age_days=5, deploy=True)
    newest = [await dataset.build(site, age_days=1) for _ in range(2)]
    await dataset.promote(pinned)
    await dataset.promote(head)
    await dataset.pin(pinned)
    await dataset.share(shared)

    docs = await dataset.project("docs", record_days=90, keep_last=2)
    docs_builds = [await dataset.build(docs, age_days=100 - i * 0.01) for i in range(3)]
    return Scenario(
        ancient=ancient,
        pinned=pinned,
        shared=shared,
        running=running,
        middle=middle,
        head=head,
        recent=recent,
        newest=newest,
        docs_oldest=docs_builds[0],
        docs_kept=docs_builds[1:],
    )


def removed_ids(report: RetentionReport) -> dict[str, set[str]]:
    return {c: set(report.removed.of(c).ids) for c in RETENTION_CATEGORIES}


async def assert_kept_whole(storage: StorageUnderTest, redis: aioredis.Redis, build: Build) -> None:
    stored = await BuildStore(redis).get(build.id)
    assert stored is not None, f"the record of {build.id} is gone"
    assert stored.artifact == build.artifact
    assert stored.deployment_id == build.deployment_id
    assert await storage.has_artifact(build.id) == (build.artifact is not None)
    assert await storage.has_log(build.id), f"the log of {build.id} is gone"
    if build.deployment_id is not None:
        assert await storage.has_deployment(build.deployment_id)
        assert await DeploymentRecords(redis).get(build.deployment_id) is not None


async def assert_removed_as_planned(
    storage: StorageUnderTest, redis: aioredis.Redis, scenario: Scenario
) -> None:
    builds = BuildStore(redis)
    for build in scenario.removed_builds:
        assert not await storage.has_artifact(build.id)
        assert not await storage.has_log(build.id)
    for build in (scenario.ancient, scenario.middle):
        assert build.deployment_id is not None
        assert not await storage.has_deployment(build.deployment_id)
        assert await DeploymentRecords(redis).get(build.deployment_id) is None
    assert await builds.get(scenario.ancient.id) is None
    assert await builds.get(scenario.docs_oldest.id) is None
    assert scenario.ancient.id not in await builds.ids_for_project(scenario.ancient.project_id)
    # A build within the record horizon keeps its record, without what was removed.
    middle = await builds.get(scenario.middle.id)
    assert middle is not None
    assert (middle.artifact, middle.deployment_id, middle.deployment_url) == (None, None, None)
    for build in scenario.kept_whole:
        await assert_kept_whole(storage, redis, build)
