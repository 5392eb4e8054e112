"""Personal API keys through the HTTP API: shown once, Bearer and Basic, scopes, revocation."""

from __future__ import annotations

from tests.gateway.support import AUTH, Gateway, basic, bearer


async def test_key_is_shown_once_and_listed_without_its_secret(gateway: Gateway) -> None:
    jane = await gateway.user_headers("jane")
    created = await gateway.create_key(jane, "builds:read")
    assert created["key"].startswith(f"gb_{created['id']}_")
    assert created["scopes"] == ["builds:read"]

    response = await gateway.client.get("/api/keys", headers=jane)
    listed = (await response.get_json())["keys"]
    assert [k["id"] for k in listed] == [created["id"]]
    assert "key" not in listed[0] and "secret_sha256" not in listed[0]
    assert created["key"] not in await response.get_data(as_text=True)
    assert listed[0]["prefix"] == f"gb_{created['id']}" and listed[0]["last_used_at"] is None


async def test_key_works_as_bearer_and_as_basic_password_and_records_its_last_use(
    gateway: Gateway,
) -> None:
    jane = await gateway.user_headers("jane")
    project = await gateway.create_project(headers=jane)
    key = (await gateway.create_key(jane, "builds:read"))["key"]
    path = f"/api/projects/{project['id']}/builds"
    assert (await gateway.client.get(path, headers=bearer(key))).status_code == 200
    assert (await gateway.client.get(path, headers=basic("jane", key))).status_code == 200
    # `curl -u x:KEY`: the user name of Basic does not matter, the key names its owner.
    assert (await gateway.client.get(path, headers=basic("ci", key))).status_code == 200

    response = await gateway.client.get("/api/me", headers=bearer(key))
    me = await response.get_json()
    assert me["kind"] == "api_key" and me["username"] == "jane"
    assert me["scopes"] == ["builds:read"]
    listed = await (await gateway.client.get("/api/keys", headers=jane)).get_json()
    assert listed["keys"][0]["last_used_at"] is not None


async def test_scopes_narrow_what_a_key_may_do(gateway: Gateway) -> None:
    jane = await gateway.user_headers("jane")
    project = await gateway.create_project(headers=jane)
    build_id = await gateway.start_build(project["id"], headers=jane)
    read = bearer((await gateway.create_key(jane, "builds:read"))["key"])
    write = bearer((await gateway.create_key(jane, "builds:write"))["key"])
    projects_only = bearer((await gateway.create_key(jane, "projects:read"))["key"])

    response = await gateway.client.post(
        f"/api/projects/{project['id']}/builds", json={}, headers=read
    )
    assert response.status_code == 403
    assert "builds:read" in (await response.get_json())["detail"]
    assert (
        await gateway.client.post(f"/api/builds/{build_id}/cancel", headers=read)
    ).status_code == 403
    assert (await gateway.client.get(f"/api/builds/{build_id}", headers=read)).status_code == 200

    response = await gateway.client.post(
        f"/api/projects/{project['id']}/builds", json={}, headers=write
    )
    assert response.status_code == 202

    assert (
        await gateway.client.get(f"/api/projects/{project['id']}", headers=projects_only)
    ).status_code == 200
    assert (
        await gateway.client.get(f"/api/builds/{build_id}", headers=projects_only)
    ).status_code == 403
    # No key scope reaches user management or other keys, whatever the owner may do.
    assert (await gateway.client.get("/api/users", headers=write)).status_code == 403
    response = await gateway.client.post(
        "/api/keys", json={"name": "more", "scopes": ["builds:read"]}, headers=write
    )
    assert response.status_code == 403


async def test_a_key_never_gets_more_than_its_creator(gateway: Gateway) -> None:
    jane = await gateway.user_headers("jane")
    response = await gateway.client.post(
        "/api/keys", json={"name": "x", "scopes": ["users:admin"]}, headers=jane
    )
    assert response.status_code == 403
    keys_key = bearer((await gateway.create_key(jane, "keys:admin", "builds:read"))["key"])
    response = await gateway.client.post(
        "/api/keys", json={"name": "y", "scopes": ["builds:write"]}, headers=keys_key
    )
    assert response.status_code == 403
    response = await gateway.client.post(
        "/api/keys", json={"name": "y", "scopes": ["builds:read"]}, headers=keys_key
    )
    assert response.status_code == 201


async def test_revoked_key_is_401_at_once(gateway: Gateway) -> None:
    jane = await gateway.user_headers("jane")
    created = await gateway.create_key(jane, "builds:read")
    key = bearer(created["key"])
    assert (await gateway.client.get("/api/me", headers=key)).status_code == 200
    response = await gateway.client.delete(f"/api/keys/{created['id']}", headers=jane)
    assert response.status_code == 204
    response = await gateway.client.get("/api/me", headers=key)
    assert response.status_code == 401
    assert (await response.get_json())["detail"] == "invalid, expired or revoked API key"
    assert (
        await gateway.client.get("/api/me", headers=basic("x", created["key"]))
    ).status_code == 401
    again = await gateway.client.delete(f"/api/keys/{created['id']}", headers=jane)
    assert again.status_code == 404


async def test_one_user_cannot_revoke_anothers_key(gateway: Gateway) -> None:
    jane = await gateway.user_headers("jane")
    bob = await gateway.user_headers("bob")
    created = await gateway.create_key(jane, "builds:read")
    response = await gateway.client.delete(f"/api/keys/{created['id']}", headers=bob)
    assert response.status_code == 404
    assert (await gateway.client.get("/api/me", headers=bearer(created["key"]))).status_code == 200


async def test_key_with_an_expiry_in_the_past_or_without_zone_is_refused(
    gateway: Gateway,
) -> None:
    jane = await gateway.user_headers("jane")
    for expires_at, status in (("2001-01-01T00:00:00Z", 422), ("2999-01-01T00:00:00", 422)):
        response = await gateway.client.post(
            "/api/keys",
            json={"name": "x", "scopes": ["builds:read"], "expires_at": expires_at},
            headers=jane,
        )
        assert response.status_code == status, expires_at
    response = await gateway.client.post(
        "/api/keys",
        json={"name": "x", "scopes": ["builds:read"], "expires_at": "2999-01-01T00:00:00Z"},
        headers=jane,
    )
    assert response.status_code == 201
    assert (await response.get_json())["expires_at"].startswith("2999-01-01")


async def test_admin_key_cannot_own_api_keys(gateway: Gateway) -> None:
    response = await gateway.client.post(
        "/api/keys", json={"name": "x", "scopes": ["builds:read"]}, headers=AUTH
    )
    assert response.status_code == 403
