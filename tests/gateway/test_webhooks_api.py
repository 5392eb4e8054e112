"""Webhook deliveries from GitHub and GitLab (real payloads) through the gateway."""

from __future__ import annotations

import json

from gobuild.platform.stores.builds import BuildStore
from gobuild.platform.stores.connection import connect_redis
from tests.gateway.support import Gateway, fixture_body, published_triggers

SECRET = "s3cret-webhook-value-0123456789"


async def builds_of(gateway: Gateway, project_id: str) -> list[str]:
    async with connect_redis(gateway.settings.redis_url) as redis:
        return [b.id for b in await BuildStore(redis).list_for_project(project_id)]


async def test_signed_github_push_is_accepted_with_a_build_id_and_published(
    gateway: Gateway,
) -> None:
    project = await gateway.create_project(webhook_secret=SECRET, production_branch="master")
    payload = fixture_body("github/push-branch-created.json")
    response = await gateway.github_push(payload, SECRET, delivery="d-1")
    assert response.status_code == 202
    body = await response.get_json()
    build_id = body["build_id"]
    assert body["status_url"].endswith(f"/api/builds/{build_id}")

    async with connect_redis(gateway.settings.redis_url) as redis:
        build = await BuildStore(redis).get(build_id)
    assert build is not None
    assert build.state == "queued"
    assert (build.branch, build.commit_sha) == ("master", payload["head_commit"]["id"])
    assert build.production is True
    assert build.author == payload["pusher"]["name"]

    triggers = await published_triggers(gateway.settings, expected=1)
    assert [(t.build_id, t.project_id, t.source, t.delivery_id) for t in triggers] == [
        (build_id, project["id"], "github", "d-1")
    ]


async def test_push_with_bad_signature_is_rejected_and_enqueues_nothing(gateway: Gateway) -> None:
    project = await gateway.create_project(webhook_secret=SECRET)
    payload = fixture_body("github/push-branch-created.json")
    response = await gateway.github_push(payload, "not-the-secret-at-all-000", delivery="d-2")
    assert response.status_code == 401
    assert (await response.get_json())["error"] == "invalid signature"

    body = json.dumps(payload).encode()
    unsigned = await gateway.client.post(
        "/webhooks/github",
        data=body,
        headers={
            "X-GitHub-Event": "push",
            "X-GitHub-Delivery": "d-3",
            "Content-Type": "application/json",
        },
    )
    assert unsigned.status_code == 401
    assert await builds_of(gateway, project["id"]) == []
    assert await published_triggers(gateway.settings, expected=0, wait=1.0) == []


async def test_redelivered_github_delivery_creates_no_second_build(gateway: Gateway) -> None:
    project = await gateway.create_project(webhook_secret=SECRET)
    payload = fixture_body("github/push-branch-created.json")
    first = await gateway.github_push(payload, SECRET, delivery="same-guid")
    again = await gateway.github_push(payload, SECRET, delivery="same-guid")
    assert first.status_code == 202
    assert again.status_code == 200
    body = await again.get_json()
    assert body["duplicate"] is True
    assert body["build_id"] == (await first.get_json())["build_id"]
    assert len(await builds_of(gateway, project["id"])) == 1
    assert len(await published_triggers(gateway.settings, expected=1)) == 1


async def test_delivery_without_an_id_is_deduplicated_by_its_body(gateway: Gateway) -> None:
    project = await gateway.create_project(webhook_secret=SECRET)
    payload = fixture_body("github/push-branch-created.json")
    first = await gateway.github_push(payload, SECRET, delivery=None)
    again = await gateway.github_push(payload, SECRET, delivery=None)
    assert first.status_code == 202
    assert again.status_code == 200
    body = await again.get_json()
    assert body["duplicate"] is True
    assert body["build_id"] == (await first.get_json())["build_id"]
    assert "was received before" in body["detail"]

    other = {
        **payload,
        "after": "1" * 40,
        "head_commit": {**payload["head_commit"], "id": "1" * 40},
    }
    assert (await gateway.github_push(other, SECRET, delivery=None)).status_code == 202
    assert len(await builds_of(gateway, project["id"])) == 2
    assert len(await published_triggers(gateway.settings, expected=2)) == 2


async def test_branch_or_tag_deletion_creates_no_build(gateway: Gateway) -> None:
    project = await gateway.create_project(webhook_secret=SECRET, build_tags=True)
    payload = fixture_body("github/push-tag-deleted.json")
    response = await gateway.github_push(payload, SECRET, delivery="d-del")
    assert response.status_code == 200
    assert "deleted" in (await response.get_json())["skipped"]

    branch_deleted = fixture_body("github/push-branch-created.json")
    branch_deleted.update(deleted=True, after="0" * 40, head_commit=None, created=False)
    response = await gateway.github_push(branch_deleted, SECRET, delivery="d-del-2")
    assert response.status_code == 200
    assert await builds_of(gateway, project["id"]) == []


async def test_tag_push_builds_only_when_the_project_asks_for_it(gateway: Gateway) -> None:
    payload = fixture_body("github/push-tag-created-ghes.json")
    no_tags = await gateway.create_project(webhook_secret=SECRET)
    response = await gateway.github_push(payload, SECRET, delivery="t-1")
    assert response.status_code == 200
    assert "does not build tags" in (await response.get_json())["skipped"]
    assert await builds_of(gateway, no_tags["id"]) == []

    async with connect_redis(gateway.settings.redis_url) as redis:
        await redis.flushdb()
    tags = await gateway.create_project(webhook_secret=SECRET, build_tags=True)
    response = await gateway.github_push(payload, SECRET, delivery="t-2")
    assert response.status_code == 202
    async with connect_redis(gateway.settings.redis_url) as redis:
        build = await BuildStore(redis).get((await response.get_json())["build_id"])
    assert build is not None and build.tag == "simple-tag" and build.branch is None
    assert await builds_of(gateway, tags["id"]) == [build.id]


async def test_github_ping_is_answered_without_a_build(gateway: Gateway) -> None:
    project = await gateway.create_project(
        webhook_secret=SECRET, repo_url="https://github.com/Octocoders/Hello-World.git"
    )
    response = await gateway.github_push(
        fixture_body("github/ping.json"), SECRET, "p-1", event="ping"
    )
    assert response.status_code == 200
    assert (await response.get_json())["project_ids"] == [project["id"]]
    assert await builds_of(gateway, project["id"]) == []


async def test_push_for_an_unregistered_repository_is_404(gateway: Gateway) -> None:
    await gateway.create_project(
        webhook_secret=SECRET, repo_url="https://github.com/other/repo.git"
    )
    response = await gateway.github_push(
        fixture_body("github/push-branch-created.json"), SECRET, "u-1"
    )
    assert response.status_code == 404
    assert (await response.get_json())["detail"] == "Codertocat/Hello-World"


async def test_unsupported_github_event_is_400_naming_it(gateway: Gateway) -> None:
    await gateway.create_project(webhook_secret=SECRET)
    payload = fixture_body("github/pull_request-opened.json")
    response = await gateway.github_push(payload, SECRET, "pr-1", event="pull_request")
    assert response.status_code == 400
    assert "pull_request" in (await response.get_json())["error"]


async def test_gitlab_push_with_the_right_token_is_accepted_once(gateway: Gateway) -> None:
    project = await gateway.create_project(
        webhook_secret=SECRET, provider="gitlab", repo_url="http://example.com/mike/diaspora.git"
    )
    payload = fixture_body("gitlab/push-hook.json")
    headers = {
        "X-Gitlab-Event": "Push Hook",
        "X-Gitlab-Token": SECRET,
        "Idempotency-Key": "gl-1",
        "Content-Type": "application/json",
    }
    response = await gateway.client.post(
        "/webhooks/gitlab", data=json.dumps(payload), headers=headers
    )
    assert response.status_code == 202
    again = await gateway.client.post("/webhooks/gitlab", data=json.dumps(payload), headers=headers)
    assert again.status_code == 200 and (await again.get_json())["duplicate"] is True
    wrong = await gateway.client.post(
        "/webhooks/gitlab",
        data=json.dumps(payload),
        headers={**headers, "X-Gitlab-Token": "wrong", "Idempotency-Key": "gl-2"},
    )
    assert wrong.status_code == 401
    build_ids = await builds_of(gateway, project["id"])
    assert build_ids == [(await response.get_json())["build_id"]]
    triggers = await published_triggers(gateway.settings, expected=1)
    assert [(t.branch, t.commit_sha) for t in triggers] == [("master", payload["checkout_sha"])]


async def test_oversized_webhook_body_is_413(gateway: Gateway) -> None:
    await gateway.create_project(webhook_secret=SECRET)
    big = b"{" + b" " * (gateway.settings.max_body_bytes + 10) + b"}"
    response = await gateway.client.post(
        "/webhooks/github",
        data=big,
        headers={"X-GitHub-Event": "push", "Content-Type": "application/json"},
    )
    assert response.status_code == 413
