"""Deployments through the API: the history, promote / instant rollback pinning the production
alias, un-pin, redeploy; who may do each; the front door `GET /`."""

from __future__ import annotations

from typing import Any

from gobuild.platform.events import (
    TOPIC_BUILD_TRIGGERS,
    TOPIC_DEPLOYMENT_STATUS,
    BuildTriggered,
    DeploymentStatusChanged,
)
from gobuild.platform.records import Deployment
from gobuild.platform.stores.builds import BuildStore
from gobuild.platform.stores.connection import connect_redis
from gobuild.platform.stores.deployment_records import DeploymentRecords
from tests.gateway.conftest import StartGateway
from tests.gateway.support import AUTH, Gateway
from tests.kafka_reading import read_events


async def finished_build(gateway: Gateway, project_id: str, sha: str) -> str:
    """A build of `sha` recorded as the builder would leave it (no builder runs here)."""
    build_id = await gateway.start_build(project_id)
    async with connect_redis(gateway.settings.redis_url) as redis:
        builds = BuildStore(redis)
        number = await builds.next_number(project_id)
        await builds.update(build_id, number=number, commit_sha=sha, commit_message=f"commit {sha}")
    return build_id


async def deployed(gateway: Gateway, project: dict[str, Any], sha: str) -> Deployment:
    """A production build of `sha` deployed and promoted by the automatic path."""
    build_id = await finished_build(gateway, project["id"], sha)
    async with connect_redis(gateway.settings.redis_url) as redis:
        build = await BuildStore(redis).get(build_id)
        assert build is not None and build.number is not None
        records = DeploymentRecords(redis)
        deployment = Deployment(
            id=f"{project['name']}-{build.number:010d}",
            project_id=project["id"],
            build_id=build_id,
            number=build.number,
            branch="main",
            commit_sha=sha,
            url=gateway.settings.deployment_url(f"{project['name']}-{build.number:010d}"),
        )
        await records.create(deployment)
        await records.promote_if_newer(deployment, await records.production_alias(project["id"]))
    return deployment


async def team(gateway: Gateway) -> dict[str, Any]:
    """A project of owner `olga` with maintainer `max`, viewer `vic`; `sam` is a stranger."""
    people = {name: await gateway.user_headers(name) for name in ("olga", "max", "vic", "sam")}
    project = await gateway.create_project(headers=people["olga"], name="site")
    for name, role in (("max", "maintainer"), ("vic", "viewer")):
        response = await gateway.client.post(
            f"/api/projects/{project['id']}/members",
            json={"username": name, "role": role},
            headers=people["olga"],
        )
        assert response.status_code in (200, 201), await response.get_data(as_text=True)
    return {**people, "project": project}


async def test_promoting_an_earlier_deployment_rolls_back_and_pins_production(
    gateway: Gateway,
) -> None:
    world = await team(gateway)
    project, olga = world["project"], world["olga"]
    first = await deployed(gateway, project, "1" * 40)
    second = await deployed(gateway, project, "2" * 40)

    response = await gateway.client.post(f"/api/deployments/{first.id}/promote", headers=olga)
    assert response.status_code == 200, await response.get_data(as_text=True)
    assert await response.get_json() == {
        "project_id": project["id"],
        "url": gateway.settings.deployment_url("site"),
        "deployment_id": first.id,
        "pinned": True,
        "following_deployment_id": second.id,
    }
    shown = await (
        await gateway.client.get(f"/api/projects/{project['id']}", headers=olga)
    ).get_json()
    assert shown["production_deployment_id"] == first.id and shown["production_pinned"] is True

    # A new production deployment does not take the pinned alias.
    third = await deployed(gateway, project, "3" * 40)
    listed = await (
        await gateway.client.get(f"/api/projects/{project['id']}/deployments", headers=world["vic"])
    ).get_json()
    assert [d["id"] for d in listed["deployments"]] == [third.id, second.id, first.id]
    assert [d["is_production_alias"] for d in listed["deployments"]] == [False, False, True]
    assert listed["deployments"][2] | {"created_at": None} == {
        "id": first.id,
        "project_id": project["id"],
        "build_id": first.build_id,
        "number": 1,
        "branch": "main",
        "commit_sha": "1" * 40,
        "commit_message": f"commit {'1' * 40}",
        "author": None,
        "production": True,
        "url": first.url,
        "created_at": None,
        "is_production_alias": True,
    }
    assert listed["production"]["pinned"] is True
    assert listed["production"]["following_deployment_id"] == third.id

    response = await gateway.client.post("/api/projects/site/production/unpin", headers=olga)
    assert response.status_code == 200
    production = await response.get_json()
    assert (production["deployment_id"], production["pinned"]) == (third.id, False)
    shown = await (await gateway.client.get("/api/projects/site", headers=olga)).get_json()
    assert shown["production_deployment_id"] == third.id and shown["production_pinned"] is False

    events = await read_events(gateway.settings, [TOPIC_DEPLOYMENT_STATUS], 4)
    told: dict[str, list[str]] = {}
    for event in events:
        if isinstance(event, DeploymentStatusChanged):
            told.setdefault(event.deployment_id, []).append(event.state)
    # Keyed by build: in order for each deployment (not across them).
    assert told == {first.id: ["rolled_back", "pinned"], third.id: ["promoted", "unpinned"]}
    assert all(
        e.alias_url == gateway.settings.deployment_url("site")
        for e in events
        if isinstance(e, DeploymentStatusChanged)
    )


async def test_only_owners_promote_and_unpin_only_maintainers_redeploy_strangers_see_nothing(
    gateway: Gateway,
) -> None:
    world = await team(gateway)
    project = world["project"]
    deployment = await deployed(gateway, project, "a" * 40)
    promote = ("POST", f"/api/deployments/{deployment.id}/promote")
    unpin = ("POST", f"/api/projects/{project['id']}/production/unpin")
    redeploy = ("POST", f"/api/builds/{deployment.build_id}/redeploy")
    history = ("GET", f"/api/projects/{project['id']}/deployments")

    async def status(who: str, route: tuple[str, str]) -> int:
        method, path = route
        response = await gateway.client.open(path, method=method, headers=world[who])
        return response.status_code

    assert [await status("vic", r) for r in (promote, unpin, redeploy, history)] == [
        403,
        403,
        403,
        200,
    ]
    assert [await status("max", r) for r in (promote, unpin, redeploy)] == [403, 403, 202]
    assert [await status("sam", r) for r in (promote, unpin, redeploy, history)] == [404] * 4
    missing = await gateway.client.post("/api/deployments/site-missing/promote", headers=AUTH)
    assert missing.status_code == 404
    assert await (await gateway.client.post(promote[1], headers=world["olga"])).get_json()
    assert await status("olga", unpin) == 200

    viewer_says = await (await gateway.client.post(promote[1], headers=world["vic"])).get_json()
    assert viewer_says["error"] == "forbidden" and "deployment.promote" in viewer_says["detail"]


async def test_redeploy_builds_the_same_commit_again_as_a_production_build(
    gateway: Gateway,
) -> None:
    project = await gateway.create_project()
    sha = "c" * 40
    original = await finished_build(gateway, project["id"], sha)

    response = await gateway.client.post(f"/api/builds/{original}/redeploy", headers=AUTH)
    assert response.status_code == 202, await response.get_data(as_text=True)
    accepted = await response.get_json()
    assert accepted["build_id"] != original
    build = await (await gateway.client.get(accepted["status_url"], headers=AUTH)).get_json()
    assert (build["source"], build["commit_sha"], build["branch"]) == ("redeploy", sha, "main")
    assert build["ref"] == "refs/heads/main" and build["production"] is True

    triggers = await read_events(gateway.settings, [TOPIC_BUILD_TRIGGERS], 2)
    redeployed = [
        t for t in triggers if isinstance(t, BuildTriggered) and t.build_id == accepted["build_id"]
    ]
    assert [(t.source, t.commit_sha) for t in redeployed] == [("redeploy", sha)]

    not_checked_out = await gateway.start_build(project["id"])
    response = await gateway.client.post(f"/api/builds/{not_checked_out}/redeploy", headers=AUTH)
    assert response.status_code == 409
    assert (await response.get_json())["error"] == "build has no commit yet"


async def test_the_front_door_redirects_people_to_the_dashboard(
    start_gateway: StartGateway,
) -> None:
    gateway = await start_gateway(gateway={"dashboard_url": "http://dashboard.example:8090"})
    response = await gateway.client.get("/")
    assert response.status_code == 302
    assert response.headers["Location"] == "http://dashboard.example:8090"


async def test_the_front_door_without_a_dashboard_points_at_the_api(gateway: Gateway) -> None:
    response = await gateway.client.get("/")
    assert response.status_code == 200
    body = await response.get_json()
    assert body["name"] == "GoBuild" and body["api"].endswith("/openapi.json")
