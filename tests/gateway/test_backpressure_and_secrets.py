"""Backpressure on triggers (503 when the orchestrator falls behind) and webhook secret
rotation with a grace period for the old secret."""

from __future__ import annotations

import asyncio
import json

from gobuild.platform.stores.builds import BuildStore
from gobuild.platform.stores.connection import connect_redis
from gobuild.platform.stores.keys import KEY_PENDING_TRIGGERS
from tests.gateway.conftest import StartGateway
from tests.gateway.support import AUTH, Gateway, fixture_body, published_triggers

SECRET = "s3cret-webhook-value-0123456789"


async def builds_of(gateway: Gateway, project_id: str) -> list[str]:
    async with connect_redis(gateway.settings.redis_url) as redis:
        return [b.id for b in await BuildStore(redis).list_for_project(project_id)]


async def test_full_trigger_queue_answers_503_with_retry_after_and_records_nothing(
    start_gateway: StartGateway,
) -> None:
    gateway = await start_gateway(
        gateway={"max_pending_triggers": 2, "trigger_retry_after_seconds": 7}
    )
    project = await gateway.create_project(webhook_secret=SECRET, production_branch="master")
    # No orchestrator runs: accepted triggers stay pending.
    accepted = [await gateway.start_build(project["id"]) for _ in range(2)]

    refused = await gateway.client.post(
        f"/api/projects/{project['id']}/builds", json={}, headers=AUTH
    )
    assert refused.status_code == 503
    assert refused.headers["Retry-After"] == "7"
    assert (await refused.get_json())["error"] == "build queue is full"

    payload = fixture_body("github/push-branch-created.json")
    response = await gateway.github_push(payload, SECRET, delivery="while-full")
    assert response.status_code == 503 and response.headers["Retry-After"] == "7"

    assert sorted(await builds_of(gateway, project["id"])) == sorted(accepted)
    triggers = await published_triggers(gateway.settings, expected=2)
    assert sorted(t.build_id for t in triggers) == sorted(accepted)

    # The orchestrator catches up: the same delivery, sent again, is accepted.
    async with connect_redis(gateway.settings.redis_url) as redis:
        await redis.delete(KEY_PENDING_TRIGGERS)
    response = await gateway.github_push(payload, SECRET, delivery="while-full")
    assert response.status_code == 202


async def test_rotated_secret_is_shown_once_and_both_secrets_work_during_the_grace_period(
    gateway: Gateway,
) -> None:
    project = await gateway.create_project(webhook_secret=SECRET)
    response = await gateway.client.post(
        f"/api/projects/{project['id']}/webhook-secret/rotate", headers=AUTH
    )
    assert response.status_code == 200
    rotated = await response.get_json()
    new_secret = rotated["webhook_secret"]
    assert new_secret != SECRET and len(new_secret) >= 32
    assert rotated["previous_secret_expires_at"] is not None
    shown = await (
        await gateway.client.get(f"/api/projects/{project['id']}", headers=AUTH)
    ).get_data(as_text=True)
    assert new_secret not in shown and SECRET not in shown

    payload = fixture_body("github/push-branch-created.json")
    assert (await gateway.github_push(payload, SECRET, "old")).status_code == 202
    assert (await gateway.github_push(payload, new_secret, "new")).status_code == 202
    wrong = await gateway.github_push(payload, "not-either-of-them-000000", "bad")
    assert wrong.status_code == 401

    gitlab = await gateway.create_project(
        name="diaspora",
        webhook_secret=SECRET,
        provider="gitlab",
        repo_url="http://example.com/mike/diaspora.git",
    )
    response = await gateway.client.post(
        f"/api/projects/{gitlab['id']}/webhook-secret/rotate", headers=AUTH
    )
    gitlab_secret = (await response.get_json())["webhook_secret"]
    for token, delivery in ((SECRET, "gl-old"), (gitlab_secret, "gl-new")):
        response = await gateway.client.post(
            "/webhooks/gitlab",
            data=json.dumps(fixture_body("gitlab/push-hook.json")),
            headers={
                "X-Gitlab-Event": "Push Hook",
                "X-Gitlab-Token": token,
                "Idempotency-Key": delivery,
                "Content-Type": "application/json",
            },
        )
        assert response.status_code == 202, delivery


async def test_old_secret_stops_working_when_the_grace_period_ends(
    start_gateway: StartGateway,
) -> None:
    gateway = await start_gateway(gateway={"webhook_secret_grace_seconds": 1})
    project = await gateway.create_project(webhook_secret=SECRET)
    response = await gateway.client.post(
        f"/api/projects/{project['id']}/webhook-secret/rotate", headers=AUTH
    )
    new_secret = (await response.get_json())["webhook_secret"]
    payload = fixture_body("github/push-branch-created.json")
    assert (await gateway.github_push(payload, SECRET, "during")).status_code == 202
    await asyncio.sleep(1.3)
    assert (await gateway.github_push(payload, SECRET, "after")).status_code == 401
    assert (await gateway.github_push(payload, new_secret, "after-new")).status_code == 202


async def test_only_owners_rotate_the_secret(gateway: Gateway) -> None:
    bob = await gateway.user_headers("bob")
    alice = await gateway.user_headers("alice")
    project = await gateway.create_project(headers=bob)
    await gateway.client.post(
        f"/api/projects/{project['id']}/members",
        json={"username": "alice", "role": "maintainer"},
        headers=bob,
    )
    response = await gateway.client.post(
        f"/api/projects/{project['id']}/webhook-secret/rotate", headers=alice
    )
    assert response.status_code == 403
    response = await gateway.client.post(
        f"/api/projects/{project['id']}/webhook-secret/rotate", headers=bob
    )
    assert response.status_code == 200
