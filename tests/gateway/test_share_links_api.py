"""Share links through the API: maintainers create, list and revoke them; the token alone opens
exactly one build, read-only and without an account, until it expires or is revoked."""

from __future__ import annotations

import asyncio
import base64
import json
from datetime import datetime
from typing import Any

from tests.gateway.conftest import StartGateway
from tests.gateway.support import AUTH, Gateway, bearer

DASHBOARD = "http://dashboard.example:8090"


async def shared_world(gateway: Gateway) -> dict[str, Any]:
    """Owner `olga` with maintainer `max` and viewer `vic` on `site` (two builds); `sam` owns
    `other` with one build."""
    people = {name: await gateway.user_headers(name) for name in ("olga", "max", "vic", "sam")}
    site = await gateway.create_project(headers=people["olga"], name="site")
    for name, role in (("max", "maintainer"), ("vic", "viewer")):
        response = await gateway.client.post(
            f"/api/projects/{site['id']}/members",
            json={"username": name, "role": role},
            headers=people["olga"],
        )
        assert response.status_code in (200, 201)
    other = await gateway.create_project(
        headers=people["sam"], name="other", repo_url="https://github.com/sam/other.git"
    )
    return {
        **people,
        "site": site,
        "build_a": await gateway.start_build(site["id"], headers=people["olga"]),
        "build_b": await gateway.start_build(site["id"], headers=people["olga"]),
        "foreign_build": await gateway.start_build(other["id"], headers=people["sam"]),
    }


async def share(gateway: Gateway, build_id: str, headers: dict[str, str], **body: Any) -> Any:
    return await gateway.client.post(f"/api/builds/{build_id}/share", json=body, headers=headers)


async def test_a_share_link_opens_its_build_without_an_account_until_revoked(
    start_gateway: StartGateway,
) -> None:
    gateway = await start_gateway(gateway={"dashboard_url": DASHBOARD})
    world = await shared_world(gateway)
    build_a = world["build_a"]

    response = await share(gateway, build_a, world["max"], expires_in=600)
    assert response.status_code == 201, await response.get_data(as_text=True)
    link = await response.get_json()
    token = link["token"]
    assert link["url"] == f"{DASHBOARD}/share/{token}"
    assert link["build_id"] == build_a and link["created_by"] == "max"

    opened = await gateway.client.get(f"/api/shared/{token}")  # no credentials at all
    assert opened.status_code == 200, await opened.get_data(as_text=True)
    view = await opened.get_json()
    assert view["id"] == build_a and view["project_name"] == "site"
    assert view["state"] == "queued" and view["link_expires_at"] == link["expires_at"]
    assert view["log_url"].endswith(f"/api/shared/{token}/logs")
    # Nothing else of the instance: no repository, builder, members or other builds.
    assert not {"repo_url", "builder_id", "project_id", "source"} & set(view)

    listed = await (await gateway.client.get("/api/shares", headers=world["olga"])).get_json()
    assert [(s["id"], s["token"]) for s in listed["links"]] == [(link["id"], token)]
    only_b = await gateway.client.get(
        "/api/shares", query_string={"build_id": world["build_b"]}, headers=world["max"]
    )
    assert (await only_b.get_json())["links"] == []
    for stranger in ("vic", "sam"):  # a viewer may not share; sam is not in the project
        listed = await (await gateway.client.get("/api/shares", headers=world[stranger])).get_json()
        assert listed["links"] == []

    assert (
        await gateway.client.delete(f"/api/shares/{link['id']}", headers=world["sam"])
    ).status_code == 404
    assert (
        await gateway.client.delete(f"/api/shares/{link['id']}", headers=world["vic"])
    ).status_code == 403
    response = await gateway.client.delete(f"/api/shares/{link['id']}", headers=world["max"])
    assert response.status_code == 204
    for path in (
        f"/api/shared/{token}",
        f"/api/shared/{token}/logs",
        f"/api/shared/{token}/artifact",
    ):
        gone = await gateway.client.get(path)
        assert gone.status_code == 410, path
        assert (await gone.get_json())["error"] == "share link revoked"
    again = await gateway.client.delete(f"/api/shares/{link['id']}", headers=world["max"])
    assert again.status_code == 404


async def test_an_expired_share_link_says_so(gateway: Gateway) -> None:
    project = await gateway.create_project()
    build_id = await gateway.start_build(project["id"])
    response = await share(gateway, build_id, AUTH, expires_in=1)
    link = await response.get_json()
    # Without a dashboard, the link opens the gateway's own view of the build.
    assert link["url"].endswith(f"/api/shared/{link['token']}")
    await asyncio.sleep(1.2)
    expired = await gateway.client.get(f"/api/shared/{link['token']}")
    assert expired.status_code == 410
    assert await expired.get_json() == {
        "error": "share link expired",
        "detail": "ask whoever shared it for a new link",
    }
    assert (await (await gateway.client.get("/api/shares", headers=AUTH)).get_json())["links"] == []


def with_claim(token: str, **changes: Any) -> str:
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims.update(changes)
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    return f"{header}.{forged}.{signature}"


async def test_a_token_opens_only_its_own_build(gateway: Gateway) -> None:
    world = await shared_world(gateway)
    link = await (await share(gateway, world["build_a"], world["olga"])).get_json()
    token = link["token"]

    for forged in (
        with_claim(token, bid=world["build_b"]),
        with_claim(token, bid=world["foreign_build"]),
        "not-a-token",
        token[:-2],
        "x" * 5000,
    ):
        for suffix in ("", "/logs", "/artifact"):
            response = await gateway.client.get(f"/api/shared/{forged}{suffix}")
            assert response.status_code == 404, (forged, suffix)
            assert (await response.get_json())["error"] == "share link not found"
    # The token is no credential for the rest of the API, not even for its own build.
    for path in (f"/api/builds/{world['build_a']}", f"/api/builds/{world['build_b']}"):
        assert (await gateway.client.get(path, headers=bearer(token))).status_code == 401
        assert (await gateway.client.get(path)).status_code == 401


async def test_only_maintainers_share_and_within_the_allowed_lifetime(gateway: Gateway) -> None:
    world = await shared_world(gateway)
    build_a = world["build_a"]
    assert (await share(gateway, build_a, world["vic"])).status_code == 403
    assert (await share(gateway, build_a, world["sam"])).status_code == 404
    assert (await share(gateway, "b_missing", world["olga"])).status_code == 404

    default = await (await share(gateway, build_a, world["olga"])).get_json()
    lifetime = datetime.fromisoformat(default["expires_at"]) - datetime.fromisoformat(
        default["created_at"]
    )
    assert lifetime.total_seconds() == 7 * 24 * 3600  # GOBUILD_SHARE_LINK_TTL_SECONDS

    too_long = await share(gateway, build_a, world["olga"], expires_in=10**9)
    assert too_long.status_code == 422
    assert "lasts 1 to" in (await too_long.get_json())["detail"]
    assert (await share(gateway, build_a, world["olga"], expires_in=0)).status_code == 422
    assert (await share(gateway, build_a, world["olga"], expires=60)).status_code == 422
