"""Who may do what: project membership, roles, 404 for other people's projects, admin routes."""

from __future__ import annotations

import re

from quart import Quart

from gobuild.platform.stores.builds import BuildStore
from gobuild.platform.stores.connection import connect_redis
from tests.gateway.support import AUTH, Gateway


async def two_users_with_a_project_each(gateway: Gateway) -> dict[str, object]:
    alice = await gateway.user_headers("alice")
    bob = await gateway.user_headers("bob")
    project_a = await gateway.create_project(headers=alice, name="alice-site")
    project_b = await gateway.create_project(
        headers=bob, name="bob-site", repo_url="https://github.com/bob/site.git"
    )
    build_b = await gateway.start_build(project_b["id"], headers=bob)
    return {
        "alice": alice,
        "bob": bob,
        "project_a": project_a,
        "project_b": project_b,
        "build_b": build_b,
    }


async def test_the_creator_of_a_project_is_its_owner(gateway: Gateway) -> None:
    alice = await gateway.user_headers("alice")
    project = await gateway.create_project(headers=alice)
    assert project["role"] == "owner"
    response = await gateway.client.get(f"/api/projects/{project['id']}/members", headers=alice)
    assert (await response.get_json())["members"] == [{"username": "alice", "role": "owner"}]


async def test_users_list_only_their_projects_and_admins_all(gateway: Gateway) -> None:
    world = await two_users_with_a_project_each(gateway)
    for user, project in (("alice", "project_a"), ("bob", "project_b")):
        listed = await (await gateway.client.get("/api/projects", headers=world[user])).get_json()
        assert [p["id"] for p in listed["projects"]] == [world[project]["id"]]  # type: ignore[index]
    listed = await (await gateway.client.get("/api/projects", headers=AUTH)).get_json()
    assert len(listed["projects"]) == 2
    admin = await gateway.login("admin", "initial-admin-password")
    listed = await (
        await gateway.client.get(
            "/api/projects", headers={"Authorization": f"Bearer {admin['access_token']}"}
        )
    ).get_json()
    assert len(listed["projects"]) == 2


async def test_another_users_project_build_log_artifact_and_cancel_are_404(
    gateway: Gateway,
) -> None:
    world = await two_users_with_a_project_each(gateway)
    alice = world["alice"]
    project_b, build_b = world["project_b"]["id"], world["build_b"]  # type: ignore[index]
    missing_project = await gateway.client.get("/api/projects/p_doesnotexist", headers=alice)
    missing_build = await gateway.client.get("/api/builds/b_doesnotexist", headers=alice)

    for method, path in (
        ("GET", f"/api/projects/{project_b}"),
        ("GET", "/api/projects/bob-site"),
        ("GET", f"/api/projects/{project_b}/builds"),
        ("POST", f"/api/projects/{project_b}/builds"),
        ("GET", f"/api/projects/{project_b}/members"),
        ("POST", f"/api/projects/{project_b}/members"),
        ("POST", f"/api/projects/{project_b}/webhook-secret/rotate"),
    ):
        body = {} if path.endswith("builds") else {"username": "alice", "role": "owner"}
        response = await gateway.client.open(
            path, method=method, headers=alice, json=body if method == "POST" else None
        )
        assert response.status_code == 404, (method, path)
        assert (await response.get_json())["error"] == "project not found"

    for method, path in (
        ("GET", f"/api/builds/{build_b}"),
        ("GET", f"/api/builds/{build_b}/logs"),
        ("GET", f"/api/builds/{build_b}/artifact"),
        ("POST", f"/api/builds/{build_b}/cancel"),
    ):
        response = await gateway.client.open(path, method=method, headers=alice)
        assert response.status_code == 404, (method, path)
        # Exactly what a build that does not exist answers, but for the id itself.
        body = await response.get_json()
        assert body["error"] == (await missing_build.get_json())["error"] == "build not found"
    assert missing_project.status_code == 404

    async with connect_redis(gateway.settings.redis_url) as redis:
        store = BuildStore(redis)
        assert not await store.cancel_requested(build_b)  # type: ignore[arg-type]
        assert len(await store.list_for_project(project_b)) == 1  # type: ignore[arg-type]
    members = await (
        await gateway.client.get(f"/api/projects/{project_b}/members", headers=world["bob"])
    ).get_json()
    assert members["members"] == [{"username": "bob", "role": "owner"}]


async def test_a_viewer_reads_but_may_not_build_or_cancel(gateway: Gateway) -> None:
    world = await two_users_with_a_project_each(gateway)
    project_b, build_b = world["project_b"]["id"], world["build_b"]  # type: ignore[index]
    response = await gateway.client.post(
        f"/api/projects/{project_b}/members",
        json={"username": "alice", "role": "viewer"},
        headers=world["bob"],
    )
    assert (await response.get_json()) == {"username": "alice", "role": "viewer"}
    alice = world["alice"]
    assert (await gateway.client.get(f"/api/builds/{build_b}", headers=alice)).status_code == 200
    response = await gateway.client.post(f"/api/builds/{build_b}/cancel", headers=alice)
    assert response.status_code == 403
    assert "viewer" in (await response.get_json())["detail"]
    response = await gateway.client.post(
        f"/api/projects/{project_b}/builds", json={}, headers=alice
    )
    assert response.status_code == 403
    response = await gateway.client.post(
        f"/api/projects/{project_b}/members",
        json={"username": "alice", "role": "owner"},
        headers=alice,
    )
    assert response.status_code == 403


async def test_a_maintainer_builds_and_cancels(gateway: Gateway) -> None:
    world = await two_users_with_a_project_each(gateway)
    project_b, build_b = world["project_b"]["id"], world["build_b"]  # type: ignore[index]
    await gateway.client.post(
        f"/api/projects/{project_b}/members",
        json={"username": "alice", "role": "maintainer"},
        headers=world["bob"],
    )
    alice = world["alice"]
    assert (
        await gateway.client.post(f"/api/builds/{build_b}/cancel", headers=alice)
    ).status_code == 202
    await gateway.start_build(project_b, headers=alice)  # type: ignore[arg-type]


async def test_owners_manage_members_and_a_project_keeps_an_owner(gateway: Gateway) -> None:
    world = await two_users_with_a_project_each(gateway)
    project_b = world["project_b"]["id"]  # type: ignore[index]
    bob = world["bob"]
    members = f"/api/projects/{project_b}/members"
    response = await gateway.client.post(
        members, json={"username": "nobody", "role": "viewer"}, headers=bob
    )
    assert response.status_code == 404
    response = await gateway.client.post(
        members, json={"username": "alice", "role": "superuser"}, headers=bob
    )
    assert response.status_code == 422
    assert (await response.get_json())["detail"][0]["field"] == "role"
    response = await gateway.client.delete(f"{members}/bob", headers=bob)
    assert response.status_code == 409
    await gateway.client.post(members, json={"username": "alice", "role": "viewer"}, headers=bob)
    # A member may leave; after that the project is gone for them.
    assert (
        await gateway.client.delete(f"{members}/alice", headers=world["alice"])
    ).status_code == 204
    response = await gateway.client.get(f"/api/projects/{project_b}", headers=world["alice"])
    assert response.status_code == 404
    assert (await gateway.client.delete(f"{members}/alice", headers=bob)).status_code == 404


async def test_only_admins_manage_users(gateway: Gateway) -> None:
    alice = await gateway.user_headers("alice")
    assert (await gateway.client.get("/api/users", headers=alice)).status_code == 403
    response = await gateway.client.post(
        "/api/users", json={"username": "mallory", "password": "password-123"}, headers=alice
    )
    assert response.status_code == 403
    assert (await gateway.client.delete("/api/users/admin", headers=alice)).status_code == 403

    listed = await (await gateway.client.get("/api/users", headers=AUTH)).get_json()
    assert [u["username"] for u in listed["users"]] == ["admin", "alice"]
    assert all("password_hash" not in u for u in listed["users"])
    response = await gateway.client.post(
        "/api/users", json={"username": "alice", "password": "password-123"}, headers=AUTH
    )
    assert response.status_code == 409
    response = await gateway.client.delete("/api/users/admin", headers=AUTH)
    assert response.status_code == 409  # the last admin stays
    assert (await gateway.client.delete("/api/users/alice", headers=AUTH)).status_code == 204
    assert (await gateway.client.delete("/api/users/alice", headers=AUTH)).status_code == 404


def api_rules(app: Quart) -> list[tuple[str, str]]:
    rules = []
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith("/api/"):
            continue
        path = re.sub(r"<(?:[^:>]*:)?([^>]+)>", "x1", rule.rule)
        rules.extend((method, path) for method in sorted(rule.methods - {"HEAD", "OPTIONS"}))
    return rules


async def test_every_api_route_but_the_sign_in_ones_needs_credentials(gateway: Gateway) -> None:
    public = {"/api/auth/login", "/api/auth/refresh", "/api/auth/exchange"}
    rules = api_rules(gateway.client.app)
    assert len(rules) >= 20
    for method, path in rules:
        response = await gateway.client.open(path, method=method, json={})
        if path in public:
            assert response.status_code in (401, 422), (method, path)
        elif path.startswith("/api/shared/"):  # opened by a share link's token alone
            assert response.status_code == 404, (method, path)
            assert (await response.get_json())["error"] == "share link not found"
        else:
            assert response.status_code == 401, (method, path)
            assert "Bearer" in response.headers["WWW-Authenticate"]
