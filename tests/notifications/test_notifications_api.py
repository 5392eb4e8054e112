"""The gateway's notification API: hooks (and the address policy), the write-only forge
token, the delivery log and the e-mail preferences."""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis

from gobuild.platform.notification_records import BuildSummary, Delivery
from gobuild.platform.records import Project
from gobuild.platform.repo_credentials import NOTIFICATION_SECRETS_PURPOSE, SecretCipher
from gobuild.platform.stores.deliveries import DeliveryQueue, new_delivery_id
from gobuild.platform.stores.projects import ProjectStore
from tests.gateway.support import AUTH, Gateway
from tests.notifications.conftest import StartGateway

HOOK = {"url": "https://93.184.215.14/hooks/gobuild", "events": ["failed", "promoted"]}


async def hooks_of(gateway: Gateway, project_id: str, headers: dict[str, str] = AUTH) -> Any:
    return await gateway.client.get(f"/api/projects/{project_id}/hooks", headers=headers)


async def test_a_hook_url_on_127_0_0_1_is_refused_by_default(start_gateway: StartGateway) -> None:
    gateway = await start_gateway()
    project = await gateway.create_project()

    for url in (
        "http://127.0.0.1:9000/hook",
        "http://localhost/hook",
        "http://[::1]/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://10.1.2.3/hook",
        "http://2130706433/hook",  # 127.0.0.1 as one number
    ):
        response = await gateway.client.post(
            f"/api/projects/{project['id']}/hooks",
            json={"url": url, "events": ["failed"]},
            headers=AUTH,
        )
        assert response.status_code == 422, url
        assert (await response.get_json())["error"] == "url refused"

    assert (await (await hooks_of(gateway, project["id"])).get_json()) == {"hooks": []}


async def test_a_hook_on_127_0_0_1_is_accepted_when_private_addresses_are_allowed(
    start_gateway: StartGateway,
) -> None:
    gateway = await start_gateway(allow_private_addresses=True)
    project = await gateway.create_project()
    response = await gateway.client.post(
        f"/api/projects/{project['id']}/hooks",
        json={"url": "http://127.0.0.1:9000/hook", "events": ["failed"]},
        headers=AUTH,
    )
    assert response.status_code == 201


async def test_a_hook_secret_is_shown_once_and_hooks_are_listed_and_deleted(
    start_gateway: StartGateway,
) -> None:
    gateway = await start_gateway()
    project = await gateway.create_project()
    url = f"/api/projects/{project['id']}/hooks"

    generated = await gateway.client.post(url, json=HOOK, headers=AUTH)
    assert generated.status_code == 201
    created = await generated.get_json()
    assert created["url"] == HOOK["url"] and created["events"] == HOOK["events"]
    assert len(created["secret"]) >= 32
    given = await gateway.client.post(url, json={**HOOK, "secret": "s" * 20}, headers=AUTH)
    assert (await given.get_json())["secret"] is None  # what the caller gave is not echoed

    listed = await (await hooks_of(gateway, project["id"])).get_json()
    assert [h["id"] for h in listed["hooks"]] == [created["id"], (await given.get_json())["id"]]
    assert all("secret" not in h for h in listed["hooks"])

    deleted = await gateway.client.delete(f"{url}/{created['id']}", headers=AUTH)
    assert deleted.status_code == 204
    again = await gateway.client.delete(f"{url}/{created['id']}", headers=AUTH)
    assert again.status_code == 404
    assert len((await (await hooks_of(gateway, project["id"])).get_json())["hooks"]) == 1


async def test_hook_events_must_be_known_stages(start_gateway: StartGateway) -> None:
    gateway = await start_gateway()
    project = await gateway.create_project()
    for events in (["failed", "exploded"], [], ["failed", "failed"]):
        response = await gateway.client.post(
            f"/api/projects/{project['id']}/hooks",
            json={**HOOK, "events": events},
            headers=AUTH,
        )
        assert response.status_code == 422, events


async def test_viewers_cannot_manage_hooks_but_maintainers_can(start_gateway: StartGateway) -> None:
    gateway = await start_gateway()
    project = await gateway.create_project()
    viewer = await gateway.user_headers("vera")
    maintainer = await gateway.user_headers("max")
    outsider = await gateway.user_headers("olga")
    for username, role in (("vera", "viewer"), ("max", "maintainer")):
        await gateway.client.post(
            f"/api/projects/{project['id']}/members",
            json={"username": username, "role": role},
            headers=AUTH,
        )
    url = f"/api/projects/{project['id']}/hooks"

    assert (await gateway.client.post(url, json=HOOK, headers=viewer)).status_code == 403
    assert (await hooks_of(gateway, project["id"], viewer)).status_code == 403
    assert (await gateway.client.post(url, json=HOOK, headers=outsider)).status_code == 404
    assert (await gateway.client.post(url, json=HOOK, headers=maintainer)).status_code == 201
    log = await gateway.client.get(f"/api/projects/{project['id']}/notifications", headers=viewer)
    assert log.status_code == 403


async def test_the_forge_token_is_write_only_and_kept_encrypted(
    start_gateway: StartGateway, redis: aioredis.Redis
) -> None:
    gateway = await start_gateway()
    project = await gateway.create_project()
    assert project["forge_token_set"] is False
    url = f"/api/projects/{project['id']}/forge-token"

    response = await gateway.client.put(url, json={"token": "ghp_very_secret"}, headers=AUTH)
    assert response.status_code == 204
    shown = await gateway.client.get(f"/api/projects/{project['id']}", headers=AUTH)
    assert (await shown.get_json())["forge_token_set"] is True
    assert "ghp_very_secret" not in await shown.get_data(as_text=True)
    stored = await ProjectStore(redis).get(project["id"])
    assert stored is not None and stored.forge_token is not None
    assert "ghp_very_secret" not in stored.model_dump_json()
    cipher = await SecretCipher.load(redis, gateway.settings, NOTIFICATION_SECRETS_PURPOSE)
    assert cipher.decrypt(stored.forge_token) == "ghp_very_secret"

    assert (await gateway.client.delete(url, headers=AUTH)).status_code == 204
    shown = await gateway.client.get(f"/api/projects/{project['id']}", headers=AUTH)
    assert (await shown.get_json())["forge_token_set"] is False


async def test_a_forge_url_on_an_internal_address_is_refused(start_gateway: StartGateway) -> None:
    gateway = await start_gateway()
    project = await gateway.create_project(provider="gitlab")
    response = await gateway.client.put(
        f"/api/projects/{project['id']}/forge-token",
        json={"token": "glpat-x", "forge_url": "http://192.168.1.10"},
        headers=AUTH,
    )
    assert response.status_code == 422
    assert (await response.get_json())["error"] == "forge_url refused"


async def test_the_delivery_log_shows_status_attempts_and_response_code(
    start_gateway: StartGateway, redis: aioredis.Redis
) -> None:
    gateway = await start_gateway()
    project = await gateway.create_project()
    stored = await ProjectStore(redis).get(project["id"])
    assert isinstance(stored, Project)
    queue = DeliveryQueue(redis)
    delivery = await queue.enqueue(
        Delivery(
            id=new_delivery_id(),
            project_id=stored.id,
            kind="hook",
            receiver="h_1",
            stage="failed",
            builds=[BuildSummary(build_id="b_1", state="failed")],
        ),
        sent_marker="test-marker",
    )
    assert delivery is not None
    await queue.finish(
        delivery.model_copy(update={"attempts": 3, "response_code": 200}), "delivered"
    )

    response = await gateway.client.get(
        f"/api/projects/{project['id']}/notifications?limit=10", headers=AUTH
    )
    assert response.status_code == 200
    [logged] = (await response.get_json())["deliveries"]
    assert logged["id"] == delivery.id
    assert (logged["status"], logged["attempts"], logged["response_code"]) == (
        "delivered",
        3,
        200,
    )
    assert logged["build_ids"] == ["b_1"] and logged["kind"] == "hook"


async def test_users_choose_the_stages_they_are_emailed_about(start_gateway: StartGateway) -> None:
    gateway = await start_gateway()
    await gateway.create_user("jane", email="jane@example.com", email_verified=True)
    jane = {"Authorization": f"Bearer {(await gateway.login('jane'))['access_token']}"}

    empty = await gateway.client.get("/api/me/notifications", headers=jane)
    assert (await empty.get_json()) == {
        "events": [],
        "projects": None,
        "email": "jane@example.com",
        "email_verified": True,
    }
    chosen = await gateway.client.put(
        "/api/me/notifications", json={"events": ["failed", "promoted"]}, headers=jane
    )
    assert chosen.status_code == 200
    again = await gateway.client.get("/api/me/notifications", headers=jane)
    assert (await again.get_json())["events"] == ["failed", "promoted"]

    unknown = await gateway.client.put(
        "/api/me/notifications", json={"events": ["everything"]}, headers=jane
    )
    assert unknown.status_code == 422
    admin_key = await gateway.client.get("/api/me/notifications", headers=AUTH)
    assert admin_key.status_code == 403
