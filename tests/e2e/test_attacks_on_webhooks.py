"""Replayed, duplicated and late webhook deliveries never roll production back (issue 6, item 6).

Each test performs the attack against the whole running GoBuild: real git, broker, Redis,
builder and gateway.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import GitRepo
from tests.e2e.stack import Stack

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

SECRET = "e2e-webhook-secret-0123456789"


def site(version: str) -> dict[str, str]:
    """A static site (no build steps) whose page names its version."""
    return {"index.html": f"<p>{version}</p>"}


def signed_push(stack: Stack, repo: Path, sha: str, branch: str = "main") -> tuple[bytes, str]:
    """The body of a GitHub push delivery for `sha` and its `X-Hub-Signature-256`."""
    payload: dict[str, Any] = json.loads(json.dumps(stack.push_payload))
    payload["ref"] = f"refs/heads/{branch}"
    payload["after"] = sha
    payload["head_commit"]["id"] = sha
    payload["repository"]["clone_url"] = str(repo)
    payload["repository"]["full_name"] = f"local/{repo.name}"
    body = json.dumps(payload).encode()
    return body, "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()


def deliver(stack: Stack, body: bytes, signature: str, delivery: str | None) -> httpx.Response:
    """POST a signed body as GitHub would, with `delivery` as its id (None: no id header)."""
    headers = {
        "Content-Type": "application/json",
        "X-GitHub-Event": "push",
        "X-Hub-Signature-256": signature,
    }
    if delivery is not None:
        headers["X-GitHub-Delivery"] = delivery
    return stack.http.post("/webhooks/github", content=body, headers=headers)


def build_of(stack: Stack, response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 202, response.text
    return stack.wait_for_build(response.json()["build_id"])


def project_builds(stack: Stack, project: dict[str, Any]) -> list[dict[str, Any]]:
    return stack.http.get(f"/api/projects/{project['id']}/builds").json()["builds"]


def test_replayed_push_of_an_old_commit_is_cancelled_and_production_stays_newer(
    stack: Stack, git_repo: GitRepo
) -> None:
    project = stack.create_project("replayed", git_repo.bare, SECRET)
    old = git_repo.commit(site("old"), "old")
    captured = stack.push_webhook(git_repo.bare, old, SECRET)
    assert build_of(stack, captured)["state"] == "succeeded"
    new = git_repo.commit(site("new"), "new")
    newest = build_of(stack, stack.push_webhook(git_repo.bare, new, SECRET))
    assert newest["state"] == "succeeded"
    assert stack.get_site(project["name"]).text == "<p>new</p>"

    # The attacker resends the captured, validly signed body under a fresh delivery id.
    request = captured.request
    replay = deliver(
        stack, request.content, request.headers["X-Hub-Signature-256"], os.urandom(8).hex()
    )

    replayed = build_of(stack, replay)
    assert replayed["commit_sha"] == old and replayed["number"] > newest["number"]
    assert replayed["state"] == "cancelled"
    assert replayed["reason"] == f"superseded: branch is at {new}"
    assert replayed["deployment_id"] is None
    assert stack.get_site(project["name"]).text == "<p>new</p>"
    shown = stack.http.get(f"/api/projects/{project['id']}").json()
    assert shown["production_deployment_id"] == newest["deployment_id"]


def test_delivery_without_an_id_sent_twice_creates_one_build(
    stack: Stack, git_repo: GitRepo
) -> None:
    project = stack.create_project("no-delivery-id", git_repo.bare, SECRET)
    sha = git_repo.commit(site("one"), "one")
    body, signature = signed_push(stack, git_repo.bare, sha)

    first = deliver(stack, body, signature, delivery=None)
    again = deliver(stack, body, signature, delivery=None)

    assert first.status_code == 202, first.text
    assert again.status_code == 200, again.text
    answer = again.json()
    assert answer["duplicate"] is True
    assert answer["build_id"] == first.json()["build_id"]
    assert answer["detail"] == (
        f"a delivery with body sha256 {hashlib.sha256(body).hexdigest()} was received before"
    )
    assert stack.wait_for_build(first.json()["build_id"])["state"] == "succeeded"
    assert [b["id"] for b in project_builds(stack, project)] == [first.json()["build_id"]]


def test_a_late_delivery_for_an_older_commit_is_not_built(stack: Stack, git_repo: GitRepo) -> None:
    project = stack.create_project("late", git_repo.bare, SECRET)
    first = git_repo.commit(site("A"), "A")
    second = git_repo.commit(site("B"), "B")

    # B's delivery overtakes A's.
    newest = build_of(stack, stack.push_webhook(git_repo.bare, second, SECRET))
    assert newest["state"] == "succeeded"
    late = build_of(stack, stack.push_webhook(git_repo.bare, first, SECRET))

    assert late["state"] == "cancelled"
    assert late["reason"] == f"superseded: branch is at {second}"
    assert "Not built: superseded" in stack.http.get(f"/api/builds/{late['id']}/logs").text
    assert stack.get_site(project["name"]).text == "<p>B</p>"


def test_an_explicit_build_of_an_older_commit_builds_but_leaves_production_on_the_newer(
    stack: Stack, git_repo: GitRepo
) -> None:
    project = stack.create_project("explicit-old", git_repo.bare, SECRET)
    old = git_repo.commit(site("old"), "old")
    new = git_repo.commit(site("new"), "new")
    newest = build_of(stack, stack.push_webhook(git_repo.bare, new, SECRET))
    assert stack.get_site(project["name"]).text == "<p>new</p>"

    response = stack.http.post(f"/api/projects/{project['id']}/builds", json={"commit_sha": old})
    explicit = build_of(stack, response)

    assert explicit["state"] == "succeeded" and explicit["commit_sha"] == old
    assert explicit["production"] is True and explicit["number"] > newest["number"]
    assert stack.get_site(explicit["deployment_id"]).text == "<p>old</p>"
    assert stack.get_site(project["name"]).text == "<p>new</p>"
    log = stack.http.get(f"/api/builds/{explicit['id']}/logs").text
    assert f"Not promoted: production serves {new}, which already contains this commit" in log
    shown = stack.http.get(f"/api/projects/{project['id']}").json()
    assert shown["production_deployment_id"] == newest["deployment_id"]
