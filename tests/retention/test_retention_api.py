"""The retention API on an in-process gateway: admins run retention now (dry or for real) and
read the reports, nobody else may; owners set a project's policy, members read it."""

from __future__ import annotations

import redis.asyncio as aioredis

from gobuild.platform.stores.retention import RetentionLock
from tests.gateway.support import AUTH, Gateway, bearer
from tests.retention.conftest import RetentionApi
from tests.retention.scenario import assert_kept_whole, assert_removed_as_planned, make_scenario

RUN = "/api/admin/retention/run"
REPORTS = "/api/admin/retention/reports"


async def test_an_admin_runs_retention_now_dry_then_for_real_and_reads_the_reports(
    retention_api: RetentionApi, redis: aioredis.Redis
) -> None:
    client, storage = retention_api.gateway.client, retention_api.storage
    scenario = await make_scenario(retention_api.dataset)

    dry = await client.post(f"{RUN}?dry_run=1", headers=AUTH)
    assert dry.status_code == 200, await dry.get_data(as_text=True)
    dry_report = await dry.get_json()
    assert dry_report["dry_run"] is True and dry_report["status"] == "completed"
    assert dry_report["trigger"] == "api" and dry_report["requested_by"] == "@admin-key"
    for category, ids in scenario.expected.items():
        assert set(dry_report["removed"][category]["ids"]) == ids
    assert dry_report["bytes_freed"] > 0
    for build in [*scenario.removed_builds, *scenario.kept_whole]:
        await assert_kept_whole(storage, redis, build)

    real = await client.post(RUN, headers=AUTH)
    assert real.status_code == 200, await real.get_data(as_text=True)
    real_report = await real.get_json()
    assert real_report["dry_run"] is False
    assert real_report["removed"] == dry_report["removed"]
    await assert_removed_as_planned(storage, redis, scenario)

    listed = await client.get(REPORTS, headers=AUTH)
    assert listed.status_code == 200
    assert [r["id"] for r in (await listed.get_json())["reports"]] == [
        real_report["id"],
        dry_report["id"],
    ]
    newest = await client.get(f"{REPORTS}?limit=1", headers=AUTH)
    assert [r["id"] for r in (await newest.get_json())["reports"]] == [real_report["id"]]


async def test_only_admins_may_run_retention_or_read_its_reports(
    retention_api: RetentionApi,
) -> None:
    gateway = retention_api.gateway
    client = gateway.client
    owner = await gateway.user_headers("jane")
    await gateway.create_project(headers=owner)
    key = await gateway.create_key(owner, "projects:admin", "builds:write")
    await gateway.create_user("root", admin=True)
    admin = bearer((await gateway.login("root"))["access_token"])

    for headers in (owner, bearer(key["key"])):
        run = await client.post(f"{RUN}?dry_run=1", headers=headers)
        assert run.status_code == 403, await run.get_data(as_text=True)
        assert (await run.get_json())["error"] == "forbidden"
        assert (await client.get(REPORTS, headers=headers)).status_code == 403
    assert (await client.post(f"{RUN}?dry_run=1")).status_code == 401
    assert (await client.get(REPORTS)).status_code == 401
    # Nothing ran: no report was left.
    reports = await client.get(REPORTS, headers=AUTH)
    assert (await reports.get_json())["reports"] == []

    assert (await client.post(f"{RUN}?dry_run=1", headers=admin)).status_code == 200
    listed = await (await client.get(REPORTS, headers=admin)).get_json()
    assert [r["requested_by"] for r in listed["reports"]] == ["root"]


async def test_run_now_while_another_run_holds_the_lock_answers_409(
    retention_api: RetentionApi, redis: aioredis.Redis
) -> None:
    assert await RetentionLock(redis).acquire("a-run-of-the-retention-service", 30)

    response = await retention_api.gateway.client.post(RUN, headers=AUTH)

    assert response.status_code == 409
    body = await response.get_json()
    assert body["error"] == "retention is running"
    assert "in progress" in body["detail"]


async def test_owners_set_a_projects_retention_and_members_read_the_effective_policy(
    retention_api: RetentionApi,
) -> None:
    gateway: Gateway = retention_api.gateway
    client = gateway.client
    owner = await gateway.user_headers("jane")
    project = await gateway.create_project(headers=owner)
    url = f"/api/projects/{project['id']}/retention"
    viewer = await gateway.user_headers("vic")
    maintainer = await gateway.user_headers("mia")
    for username, role in (("vic", "viewer"), ("mia", "maintainer")):
        added = await client.post(
            f"/api/projects/{project['id']}/members",
            json={"username": username, "role": role},
            headers=owner,
        )
        assert added.status_code in (200, 201), await added.get_data(as_text=True)
    outsider = await gateway.user_headers("otto")

    initial = await (await client.get(url, headers=viewer)).get_json()
    defaults = {
        "artifact_days": 30,
        "keep_last": 1,
        "deployment_days": 30,
        "record_days": 90,
        "cache_days": 14,
    }
    assert initial["policy"] == initial["defaults"] == defaults
    assert initial["overrides"] == dict.fromkeys(defaults)

    updated = await client.put(url, json={"artifact_days": 7, "keep_last": 5}, headers=owner)
    assert updated.status_code == 200, await updated.get_data(as_text=True)
    view = await updated.get_json()
    assert view["policy"] == {**defaults, "artifact_days": 7, "keep_last": 5}
    assert view["overrides"]["artifact_days"] == 7 and view["overrides"]["record_days"] is None
    assert view["defaults"] == defaults
    assert await (await client.get(url, headers=maintainer)).get_json() == view

    for headers in (viewer, maintainer):
        refused = await client.put(url, json={"artifact_days": 1}, headers=headers)
        assert refused.status_code == 403
    assert (await client.get(url, headers=outsider)).status_code == 404
    assert (await client.put(url, json={"keep_last": 1}, headers=outsider)).status_code == 404

    too_short = await client.put(url, json={"record_days": 10}, headers=owner)
    assert too_short.status_code == 422
    assert "record_days" in str((await too_short.get_json())["detail"])
    unknown = await client.put(url, json={"artifact_dayz": 3}, headers=owner)
    assert unknown.status_code == 422
    # Nothing refused was kept; `{}` goes back to the defaults.
    assert (await (await client.get(url, headers=owner)).get_json()) == view
    reset = await client.put(url, json={}, headers=owner)
    assert (await reset.get_json())["policy"] == defaults
    by_admin = await client.put(url, json={"deployment_days": 60, "record_days": 60}, headers=AUTH)
    assert by_admin.status_code == 200
