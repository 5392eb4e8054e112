"""The scheduler in the API: a project's scheduling settings (`PATCH /api/projects/{id}`), a
queued build's place in the queue (`GET /api/builds/{id}`), the queue (`GET /api/queue`) and
the builders (`GET /api/builders`), each showing a caller only what they may read."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from redis import Redis

from gobuild.platform.build_state import BuildState
from gobuild.platform.gateway.project_dependencies import (
    DependencyCycle,
    find_cycle,
    update_checking_cycles,
)
from gobuild.platform.records import Project
from gobuild.platform.stores.build_queue import BuildQueue, QueueEntry
from gobuild.platform.stores.builds import BuildStore
from gobuild.platform.stores.claims import BuildClaims
from gobuild.platform.stores.connection import connect_redis
from gobuild.platform.stores.keys import KEY_BUILDERS, key_project
from gobuild.platform.stores.projects import ProjectStore
from tests.gateway.support import AUTH, Gateway

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


async def patch(
    gateway: Gateway, project_ref: str, body: dict[str, Any], headers: dict[str, str] = AUTH
) -> Any:
    return await gateway.client.patch(f"/api/projects/{project_ref}", json=body, headers=headers)


async def make_project(gateway: Gateway, name: str, headers: dict[str, str] = AUTH) -> str:
    project = await gateway.create_project(
        headers=headers, name=name, repo_url=f"https://github.com/acme/{name}.git"
    )
    return str(project["id"])


async def add_member(gateway: Gateway, project_id: str, username: str, role: str) -> None:
    response = await gateway.client.post(
        f"/api/projects/{project_id}/members",
        json={"username": username, "role": role},
        headers=AUTH,
    )
    assert response.status_code == 200, await response.get_data(as_text=True)


# --- Scheduling settings ------------------------------------------------------------------


async def test_owner_sets_scheduling_settings_and_the_project_shows_them(
    gateway: Gateway,
) -> None:
    api = await make_project(gateway, "backend")
    web = await make_project(gateway, "web")

    response = await patch(
        gateway,
        "web",
        {
            "auto_cancel": False,
            "concurrency_limit": 2,
            "required_labels": ["arch=amd64", "node", "node"],
            "build_timeout_seconds": 300,
            "depends_on": ["backend"],  # by name; stored by id
        },
    )

    assert response.status_code == 200, await response.get_data(as_text=True)
    shown = await (await gateway.client.get(f"/api/projects/{web}", headers=AUTH)).get_json()
    assert shown["auto_cancel"] is False
    assert shown["concurrency_limit"] == 2
    assert shown["required_labels"] == ["arch=amd64", "node"]
    assert shown["build_timeout_seconds"] == 300
    assert shown["depends_on"] == [api]
    assert shown["dependencies"] == [{"id": api, "name": "backend"}]
    listed = await (await gateway.client.get("/api/projects", headers=AUTH)).get_json()
    assert {p["name"]: p["dependencies"] for p in listed["projects"]}["web"] == [
        {"id": api, "name": "backend"}
    ]

    response = await patch(
        gateway,
        web,
        {"concurrency_limit": None, "required_labels": None, "depends_on": []},
    )
    cleared = await response.get_json()
    assert (cleared["concurrency_limit"], cleared["required_labels"], cleared["depends_on"]) == (
        None,
        [],
        [],
    )
    assert cleared["build_timeout_seconds"] == 300  # left out: kept
    assert cleared["auto_cancel"] is False


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ({"concurrency_limit": 0}, "concurrency_limit"),
        ({"concurrency_limit": "two"}, "concurrency_limit"),
        ({"required_labels": ["Node"]}, "required_labels"),
        ({"required_labels": ["=amd64"]}, "required_labels"),
        ({"required_labels": ["arch=amd64=x"]}, "required_labels"),
        ({"required_labels": [f"label{i}" for i in range(21)]}, "required_labels"),
        ({"build_timeout_seconds": 0}, "build_timeout_seconds"),
        ({"auto_cancel": None}, "auto_cancel"),
        ({"depends_on": [""]}, "depends_on"),
    ],
)
async def test_invalid_scheduling_settings_are_422_naming_the_field(
    gateway: Gateway, body: dict[str, Any], named: str
) -> None:
    project = await make_project(gateway, "web")

    response = await patch(gateway, project, body)

    assert response.status_code == 422
    answer = await response.get_json()
    assert named in answer["error"]
    assert {item["field"] for item in answer["detail"]} <= {named} | {
        f"{named}.{i}" for i in range(25)
    }


async def test_a_build_time_limit_may_only_lower_the_instances(gateway: Gateway) -> None:
    project = await make_project(gateway, "web")
    limit = gateway.settings.build_timeout_seconds

    refused = await patch(gateway, project, {"build_timeout_seconds": limit + 1})
    allowed = await patch(gateway, project, {"build_timeout_seconds": limit})

    assert refused.status_code == 422
    answer = await refused.get_json()
    assert "build_timeout_seconds may only lower" in answer["error"]
    assert f"at most {limit} seconds" in answer["detail"]
    assert allowed.status_code == 200
    assert (await allowed.get_json())["build_timeout_seconds"] == limit


async def test_a_project_cannot_depend_on_itself(gateway: Gateway) -> None:
    project = await make_project(gateway, "web")

    response = await patch(gateway, project, {"depends_on": ["web"]})

    assert response.status_code == 422
    assert (await response.get_json())["error"] == "a project cannot depend on itself"


async def test_a_dependency_cycle_is_refused_naming_it(gateway: Gateway) -> None:
    await make_project(gateway, "web")
    await make_project(gateway, "backend")
    await make_project(gateway, "db")
    assert (await patch(gateway, "backend", {"depends_on": ["db"]})).status_code == 200
    assert (await patch(gateway, "db", {"depends_on": ["web"]})).status_code == 200

    response = await patch(gateway, "web", {"depends_on": ["backend"]})

    assert response.status_code == 422
    answer = await response.get_json()
    assert "web → backend → db → web" in answer["error"]
    shown = await (await gateway.client.get("/api/projects/web", headers=AUTH)).get_json()
    assert shown["depends_on"] == []


async def test_two_concurrent_saves_do_not_make_a_cycle(gateway: Gateway) -> None:
    await make_project(gateway, "web")
    await make_project(gateway, "backend")

    answers = await asyncio.gather(
        patch(gateway, "web", {"depends_on": ["backend"]}),
        patch(gateway, "backend", {"depends_on": ["web"]}),
    )

    assert sorted(a.status_code for a in answers) == [200, 422]


async def test_a_dependency_saved_meanwhile_is_seen_by_the_cycle_check(redis_url: str) -> None:
    """Another save lands between reading the graph and writing: the transaction runs again
    on the new graph and refuses the cycle the two would make together."""
    redis = connect_redis(redis_url)
    projects = ProjectStore(redis)
    web, api = (
        Project(
            id=f"p_{name}",
            name=name,
            repo_url=f"https://x/{name}.git",
            provider="git",
            webhook_secret="s" * 32,
        )
        for name in ("web", "api")
    )
    for project in (web, api):
        assert await projects.create(project)
    other_writer = Redis.from_url(redis_url, decode_responses=True)
    saved_meanwhile = []

    def depend_on_api(stored: Project) -> Project:
        if not saved_meanwhile:  # the concurrent save of api's dependencies, once
            other_writer.set(
                key_project(api.id),
                api.model_copy(update={"depends_on": [web.id]}).model_dump_json(),
            )
            saved_meanwhile.append(True)
        return stored.model_copy(update={"depends_on": [api.id]})

    try:
        with pytest.raises(DependencyCycle) as refused:
            await update_checking_cycles(redis, web.id, depend_on_api)
        assert str(refused.value) == "web → api → web"
        assert (await projects.get(web.id)).depends_on == []  # type: ignore[union-attr]
    finally:
        other_writer.close()
        await redis.aclose()


def test_find_cycle_gives_the_shortest_path_back_to_the_project() -> None:
    graph = {"a": ["b", "c"], "b": ["d"], "c": ["a"], "d": ["a"]}
    assert find_cycle(graph, "a") == ["a", "c", "a"]
    assert find_cycle({"a": ["b"], "b": ["c"], "c": ["b"]}, "a") is None


async def test_depends_on_another_tenants_project_is_refused_like_a_missing_one(
    gateway: Gateway,
) -> None:
    alice = await gateway.user_headers("alice")
    bob = await gateway.user_headers("bob")
    web = await make_project(gateway, "web", alice)
    secret = await make_project(gateway, "bobs-secret", bob)

    answers = {}
    for ref in ("bobs-secret", secret, "no-such-project"):
        response = await patch(gateway, web, {"depends_on": [ref]}, alice)
        assert response.status_code == 422, ref
        answers[ref] = await response.get_json()

    assert {a["error"] for a in answers.values()} == {"unknown project in depends_on"}
    assert answers["bobs-secret"]["detail"] == answers["no-such-project"]["detail"].replace(
        "no-such-project", "bobs-secret"
    )
    assert secret not in str(answers["bobs-secret"])


async def test_a_project_one_may_read_is_a_dependency_named_for_its_readers_only(
    gateway: Gateway,
) -> None:
    alice = await gateway.user_headers("alice")
    bob = await gateway.user_headers("bob")
    web = await make_project(gateway, "web", alice)
    lib = await make_project(gateway, "bobs-lib", bob)
    await add_member(gateway, lib, "alice", "viewer")
    await add_member(gateway, web, "bob", "viewer")

    response = await patch(gateway, web, {"depends_on": ["bobs-lib"]}, alice)
    assert response.status_code == 200, await response.get_data(as_text=True)
    assert (await response.get_json())["dependencies"] == [{"id": lib, "name": "bobs-lib"}]

    removed = await gateway.client.delete(f"/api/projects/{lib}/members/alice", headers=bob)
    assert removed.status_code == 204, await removed.get_data(as_text=True)
    shown = await (await gateway.client.get(f"/api/projects/{web}", headers=alice)).get_json()
    assert shown["dependencies"] == [{"id": lib, "name": None}]


# --- A queued build's place --------------------------------------------------------------


async def test_a_queued_build_shows_its_place_in_the_queue(gateway: Gateway) -> None:
    project = await make_project(gateway, "web")
    build_id = await gateway.start_build(project)
    redis = connect_redis(gateway.settings.redis_url)
    queue = BuildQueue(redis)
    try:
        # Not yet placed by the scheduler: a fallback from the queue's own order.
        await queue.enqueue("b_ahead", 1.0)
        await queue.enqueue(build_id, 2.0, queued_at=(NOW - timedelta(minutes=1)).timestamp())
        shown = await (await gateway.client.get(f"/api/builds/{build_id}", headers=AUTH)).get_json()
        assert shown["state"] == "queued"
        assert shown["queue"]["position"] == 2
        assert shown["queue"]["queued_at"] == "2026-11-27T11:59:00Z"
        assert shown["queue"]["reason"] == "no_free_slot"
        assert shown["queue"]["reason_text"] == "every builder slot is busy"
        assert shown["queue"]["estimated_start"] is None
        assert (shown["attempt"], shown["superseded_by"], shown["triggered_by"]) == (0, None, None)

        # The scheduler's round: its snapshot says where and why.
        await queue.write_snapshot(
            [
                QueueEntry(
                    build_id=build_id,
                    project_id=project,
                    position=1,
                    priority="high",
                    reason="no_builder_with_labels",
                    queued_at=NOW,
                    estimated_start=NOW + timedelta(minutes=3),
                )
            ]
        )
        shown = await (await gateway.client.get(f"/api/builds/{build_id}", headers=AUTH)).get_json()
        assert shown["queue"] == {
            "position": 1,
            "priority": "high",
            "reason": "no_builder_with_labels",
            "reason_text": "no builder has the labels the project requires",
            "queued_at": "2026-11-27T12:00:00Z",
            "estimated_start": "2026-11-27T12:03:00Z",
        }
        listed = await (
            await gateway.client.get(f"/api/projects/{project}/builds", headers=AUTH)
        ).get_json()
        assert listed["builds"][0]["queue"]["position"] == 1

        # Given to a builder and running: no longer waiting.
        assert await queue.assign(build_id, "builder-1", 1, 1)
        await BuildStore(redis).update(build_id, state=BuildState.RUNNING)
        shown = await (await gateway.client.get(f"/api/builds/{build_id}", headers=AUTH)).get_json()
        assert shown["queue"] is None
        waiting = await (await gateway.client.get("/api/queue", headers=AUTH)).get_json()
        assert waiting["builds"] == []

        # Its builder was lost: back at the front of the queue with its next attempt. It still
        # says `running` (states never go back) and shows that it waits again.
        await queue.requeue(build_id, 0.0, attempt=2, queued_at=NOW.timestamp())
        await queue.write_snapshot([])
        shown = await (await gateway.client.get(f"/api/builds/{build_id}", headers=AUTH)).get_json()
        assert shown["state"] == "running"
        assert (shown["queue"]["position"], shown["queue"]["reason"]) == (1, "no_free_slot")
        listed = await (
            await gateway.client.get(f"/api/projects/{project}/builds", headers=AUTH)
        ).get_json()
        assert listed["builds"][0]["queue"]["position"] == 1
        waiting = await (await gateway.client.get("/api/queue", headers=AUTH)).get_json()
        assert [b["build_id"] for b in waiting["builds"]] == [build_id]

        # It ended: never shown waiting, even if something left it in the queue.
        await BuildStore(redis).update(build_id, state=BuildState.FAILED)
        shown = await (await gateway.client.get(f"/api/builds/{build_id}", headers=AUTH)).get_json()
        assert shown["queue"] is None
    finally:
        await redis.aclose()


# --- The queue ------------------------------------------------------------------------------


async def test_the_queue_shows_each_tenant_only_its_builds_at_their_global_places(
    gateway: Gateway,
) -> None:
    alice = await gateway.user_headers("alice")
    bob = await gateway.user_headers("bob")
    web = await make_project(gateway, "web", alice)
    secret = await make_project(gateway, "bobs-secret", bob)
    bobs_build = await gateway.start_build(secret, bob)
    alices_build = await gateway.start_build(web, alice)
    redis = connect_redis(gateway.settings.redis_url)
    queue = BuildQueue(redis)
    try:
        for score, build_id in enumerate((bobs_build, alices_build)):
            await queue.enqueue(build_id, float(score))
        await queue.write_snapshot(
            [
                QueueEntry(
                    build_id=build_id,
                    project_id=project_id,
                    position=position,
                    priority="normal",
                    reason="no_free_slot",
                    queued_at=NOW,
                    estimated_start=None,
                )
                for position, (build_id, project_id) in enumerate(
                    ((bobs_build, secret), (alices_build, web)), start=1
                )
            ]
        )
        await BuildClaims(redis, "builder-1").beat({"running": ["b_other"], "capacity": 2})
        await BuildStore(redis).update(alices_build, number=7)  # numbered by the orchestrator

        response = await gateway.client.get("/api/queue", headers=alice)
        assert response.status_code == 200
        text = await response.get_data(as_text=True)
        answer = await response.get_json()
        assert [(b["build_id"], b["position"]) for b in answer["builds"]] == [(alices_build, 2)]
        mine = answer["builds"][0]
        assert (mine["project_id"], mine["project_name"], mine["number"], mine["branch"]) == (
            web,
            "web",
            7,
            "main",
        )
        assert mine["reason_text"] == "every builder slot is busy"
        assert answer["totals"] == {"waiting": 2, "running": 1, "slots_total": 2, "slots_free": 1}
        for hidden in (bobs_build, secret, "bobs-secret"):
            assert hidden not in text

        everything = await (await gateway.client.get("/api/queue", headers=AUTH)).get_json()
        assert [b["build_id"] for b in everything["builds"]] == [bobs_build, alices_build]
    finally:
        await redis.aclose()


# --- The builders -------------------------------------------------------------------------


async def test_the_builders_are_for_instance_admins_only(gateway: Gateway) -> None:
    alice = await gateway.user_headers("alice")

    response = await gateway.client.get("/api/builders", headers=alice)

    assert response.status_code == 403
    answer = await response.get_json()
    assert answer["error"] == "forbidden"
    assert "instance admins" in answer["detail"]


async def test_the_builders_show_online_and_lost_builders_with_their_builds(
    gateway: Gateway,
) -> None:
    project = await make_project(gateway, "web")
    build_id = await gateway.start_build(project)
    redis = connect_redis(gateway.settings.redis_url)
    try:
        queue = BuildQueue(redis)
        await queue.enqueue(build_id, 1.0)
        assert await queue.assign(build_id, "builder-1", slots=2, attempt=1)
        await BuildClaims(redis, "builder-1").beat(
            {
                "running": [build_id],
                "capacity": 2,
                "host": "build-host-1",
                "labels": ["arch=amd64", "node"],
                "cpus": 8,
                "memory_bytes": 16 * 1024**3,
                "started_at": "2026-11-27T11:00:00+00:00",
            }
        )
        lost_at = time.time() - 600
        await redis.zadd(KEY_BUILDERS, {"builder-0": lost_at})

        response = await gateway.client.get("/api/builders", headers=AUTH)
        assert response.status_code == 200, await response.get_data(as_text=True)
        online, lost = (await response.get_json())["builders"]
    finally:
        await redis.aclose()

    assert online["id"] == "builder-1"
    assert online["state"] == "online"
    assert (online["host"], online["slots_total"], online["slots_free"]) == ("build-host-1", 2, 1)
    assert online["labels"] == ["arch=amd64", "node"]
    assert (online["cpus"], online["memory_bytes"]) == (8, 16 * 1024**3)
    assert online["started_at"] == "2026-11-27T11:00:00Z"
    assert online["last_seen"] is not None
    assert online["running"] == [
        {"build_id": build_id, "project_id": project, "project_name": "web"}
    ]
    assert lost["id"] == "builder-0"
    assert lost["state"] == "lost"
    assert (lost["host"], lost["slots_total"], lost["running"]) == (None, None, [])
    seen = datetime.fromisoformat(lost["last_seen"].replace("Z", "+00:00"))
    assert abs(seen.timestamp() - lost_at) < 1
