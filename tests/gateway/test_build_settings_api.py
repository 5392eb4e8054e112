"""Project build settings (`PATCH /api/projects/{id}`) and build variables
(`/api/projects/{id}/env/{name}`): who may change and read them, what is refused, and that a
secret's value is kept encrypted and never returned."""

from __future__ import annotations

import json
from typing import Any

import pytest

from gobuild.platform.repo_credentials import BUILD_SECRETS_PURPOSE, SecretCipher
from gobuild.platform.stores.connection import connect_redis
from gobuild.platform.stores.keys import key_project_variables
from tests.gateway.support import AUTH, Gateway

SECRET = "s3cr3t-value-0123456789"


async def add_member(gateway: Gateway, project_id: str, username: str, role: str) -> dict[str, str]:
    headers = await gateway.user_headers(username)
    response = await gateway.client.post(
        f"/api/projects/{project_id}/members",
        json={"username": username, "role": role},
        headers=AUTH,
    )
    assert response.status_code == 200, await response.get_data(as_text=True)
    return headers


async def patch(
    gateway: Gateway, project_id: str, body: dict[str, Any], headers: dict[str, str] = AUTH
) -> Any:
    return await gateway.client.patch(f"/api/projects/{project_id}", json=body, headers=headers)


async def test_owner_sets_build_settings_a_field_left_out_is_kept_and_null_clears_it(
    gateway: Gateway,
) -> None:
    project = await gateway.create_project()
    response = await patch(
        gateway,
        project["id"],
        {
            "install_command": "npm ci",
            "build_command": "npm run build:site",
            "output_dir": "./public/",
            "image": "node:20-bookworm",
            "root_dir": "apps/web",
        },
    )
    assert response.status_code == 200, await response.get_data(as_text=True)
    shown = await response.get_json()
    assert shown["output_dir"] == "public"
    assert shown["root_dir"] == "apps/web"

    response = await patch(gateway, project["id"], {"build_command": None})
    assert response.status_code == 200

    shown = await (
        await gateway.client.get(f"/api/projects/{project['id']}", headers=AUTH)
    ).get_json()
    assert shown["build_command"] is None
    assert (shown["install_command"], shown["image"], shown["root_dir"]) == (
        "npm ci",
        "node:20-bookworm",
        "apps/web",
    )


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ({"root_dir": "../other"}, "root_dir"),
        ({"root_dir": "/etc"}, "root_dir"),
        ({"root_dir": "apps/../../x"}, "root_dir"),
        ({"output_dir": "../dist"}, "output_dir"),
        ({"image": "--privileged"}, "image"),
        ({"image": f"sha256:{'a' * 64}"}, "image"),
        ({"build_command": "make\x00"}, "build_command"),
        ({"test_command": "npm test"}, "test_command"),
    ],
)
async def test_invalid_build_settings_are_refused_naming_the_field(
    gateway: Gateway, body: dict[str, Any], named: str
) -> None:
    project = await gateway.create_project()

    response = await patch(gateway, project["id"], body)

    assert response.status_code == 422
    assert named in await response.get_data(as_text=True)


async def test_only_owners_change_build_settings(gateway: Gateway) -> None:
    project = await gateway.create_project()
    maintainer = await add_member(gateway, project["id"], "maya", "maintainer")

    response = await patch(gateway, project["id"], {"build_command": "x"}, maintainer)

    assert response.status_code == 403


async def test_a_secret_is_kept_encrypted_and_the_api_never_returns_its_value(
    gateway: Gateway,
) -> None:
    project = await gateway.create_project()
    url = f"/api/projects/{project['id']}/env"

    response = await gateway.client.put(
        f"{url}/API_TOKEN", json={"value": SECRET, "secret": True}, headers=AUTH
    )
    assert response.status_code == 200, await response.get_data(as_text=True)
    created = await response.get_json()
    response = await gateway.client.put(
        f"{url}/API_URL",
        json={"value": "https://api.example.com", "targets": ["preview"]},
        headers=AUTH,
    )
    assert response.status_code == 200

    listed = await (await gateway.client.get(url, headers=AUTH)).get_json()
    one = await (await gateway.client.get(f"{url}/API_TOKEN", headers=AUTH)).get_json()
    project_view = await (
        await gateway.client.get(f"/api/projects/{project['id']}", headers=AUTH)
    ).get_data(as_text=True)
    for shown in (await response.get_data(as_text=True), str(listed), str(one), project_view):
        assert SECRET not in shown
    assert created["value"] is None and one["value"] is None
    assert one["secret"] is True
    assert one["targets"] == ["production", "preview"]
    assert one["updated_by"] is None  # the admin API key is nobody
    assert one["updated_at"]
    assert [(v["name"], v["value"], v["targets"]) for v in listed["variables"]] == [
        ("API_TOKEN", None, ["production", "preview"]),
        ("API_URL", "https://api.example.com", ["preview"]),
    ]

    redis = connect_redis(gateway.settings.redis_url)
    try:
        stored = await redis.hget(key_project_variables(project["id"]), "API_TOKEN")
        cipher = await SecretCipher.load(redis, gateway.settings, BUILD_SECRETS_PURPOSE)
    finally:
        await redis.aclose()
    assert SECRET not in stored
    assert cipher.decrypt(json.loads(stored)["value"]) == SECRET


async def test_maintainers_read_variables_only_owners_set_them_and_viewers_neither(
    gateway: Gateway,
) -> None:
    project = await gateway.create_project()
    url = f"/api/projects/{project['id']}/env"
    maintainer = await add_member(gateway, project["id"], "maya", "maintainer")
    viewer = await add_member(gateway, project["id"], "vic", "viewer")
    owner = await add_member(gateway, project["id"], "olga", "owner")

    response = await gateway.client.put(
        f"{url}/TOKEN", json={"value": SECRET, "secret": True}, headers=owner
    )
    assert response.status_code == 200
    assert (await response.get_json())["updated_by"] == "olga"

    assert (await gateway.client.get(url, headers=maintainer)).status_code == 200
    assert (
        await gateway.client.put(f"{url}/TOKEN", json={"value": "x"}, headers=maintainer)
    ).status_code == 403
    assert (await gateway.client.delete(f"{url}/TOKEN", headers=maintainer)).status_code == 403
    assert (await gateway.client.get(url, headers=viewer)).status_code == 403


@pytest.mark.parametrize("name", ["GOBUILD_BUILD_ID", "gobuild_x", "HOME", "CI", "1ABC", "A-B"])
async def test_reserved_and_invalid_variable_names_are_refused(gateway: Gateway, name: str) -> None:
    project = await gateway.create_project()

    response = await gateway.client.put(
        f"/api/projects/{project['id']}/env/{name}", json={"value": "x"}, headers=AUTH
    )

    assert response.status_code == 422


async def test_a_deleted_variable_is_gone(gateway: Gateway) -> None:
    project = await gateway.create_project()
    url = f"/api/projects/{project['id']}/env/NODE_ENV"
    await gateway.client.put(url, json={"value": "production"}, headers=AUTH)

    assert (await gateway.client.delete(url, headers=AUTH)).status_code == 204
    assert (await gateway.client.get(url, headers=AUTH)).status_code == 404
    assert (await gateway.client.delete(url, headers=AUTH)).status_code == 404


async def test_targets_must_name_production_or_preview(gateway: Gateway) -> None:
    project = await gateway.create_project()
    url = f"/api/projects/{project['id']}/env/X"

    for targets in ([], ["staging"]):
        response = await gateway.client.put(
            url, json={"value": "1", "targets": targets}, headers=AUTH
        )
        assert response.status_code == 422
