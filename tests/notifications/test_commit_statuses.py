"""Commit statuses on GitHub and GitLab (the forges' APIs mocked with respx), driven by real
events through the real broker into the notification service."""

from __future__ import annotations

import json
from typing import Any

import httpx
import respx

from gobuild.platform.build_state import BuildState
from tests.conftest import wait_until
from tests.notifications.conftest import (
    DASHBOARD_URL,
    GITHUB_API_URL,
    GITLAB_URL,
    SHA,
    StartNotifications,
)
from tests.notifications.events import BuildEvents

DEPLOYMENT_URL = "http://site-abc123.localhost:8080/"
GITHUB_STATUS_URL = f"{GITHUB_API_URL}/repos/octo/site/statuses/{SHA}"
GITLAB_STATUS_URL = f"{GITLAB_URL}/api/v4/projects/group%2Fsub%2Fsite/statuses/{SHA}"


def bodies(route: respx.Route) -> list[dict[str, Any]]:
    return [json.loads(call.request.content) for call in route.calls]


def states(route: respx.Route) -> list[str]:
    return [body["state"] for body in bodies(route)]


async def sent_final(route: respx.Route, state: str) -> httpx.Request:
    await wait_until(
        lambda: state in states(route), timeout=30, message=f"no {state} commit status"
    )
    return route.calls[states(route).index(state)].request


async def test_a_failed_build_sets_the_github_commit_status_to_failure(
    respx_mock: respx.MockRouter, start_notifications: StartNotifications
) -> None:
    route = respx_mock.post(GITHUB_STATUS_URL).respond(201, json={"id": 1})
    stack = await start_notifications()
    project = await stack.project(forge_token="ghp_secret_token")
    build = BuildEvents(project.id)

    await stack.publish(
        build.status(BuildState.QUEUED),
        build.status(BuildState.DISPATCHED),
        build.status(BuildState.RUNNING, step="build"),
    )
    await sent_final(route, "pending")
    await stack.publish(
        build.completed(BuildState.FAILED, error="step 'build' exited with code 1"),
    )

    request = await sent_final(route, "failure")
    assert str(request.url) == GITHUB_STATUS_URL
    assert request.headers["Authorization"] == "Bearer ghp_secret_token"
    assert request.headers["Content-Type"] == "application/json"
    assert json.loads(request.content) == {
        "state": "failure",
        "target_url": f"{DASHBOARD_URL}/builds/{build.build_id}",
        "description": "Build #3 failed at step build",
        "context": "gobuild",
    }
    # Queued, dispatched and running are all `pending` on GitHub: one, then the result.
    assert states(route) == ["pending", "failure"]


async def test_a_successful_build_sets_github_success_with_the_deployment_url(
    respx_mock: respx.MockRouter, start_notifications: StartNotifications
) -> None:
    route = respx_mock.post(GITHUB_STATUS_URL).respond(201, json={"id": 1})
    stack = await start_notifications()
    project = await stack.project(forge_token="ghp_secret_token")
    build = BuildEvents(project.id)

    await stack.publish(
        build.status(BuildState.QUEUED),
        build.status(BuildState.RUNNING, step="build"),
        build.completed(BuildState.SUCCEEDED, deployment_url=DEPLOYMENT_URL),
    )

    request = await sent_final(route, "success")
    assert request.headers["Authorization"] == "Bearer ghp_secret_token"
    assert json.loads(request.content) == {
        "state": "success",
        "target_url": f"{DASHBOARD_URL}/builds/{build.build_id}",
        "description": f"Deployed to {DEPLOYMENT_URL}",
        "context": "gobuild",
    }


async def test_a_self_hosted_gitlab_gets_running_then_failed_with_its_private_token(
    respx_mock: respx.MockRouter, start_notifications: StartNotifications
) -> None:
    route = respx_mock.post(GITLAB_STATUS_URL).respond(201, json={"id": 1})
    stack = await start_notifications()
    project = await stack.project(
        provider="gitlab",
        repo_url="https://gitlab.example.com/group/sub/site.git",
        forge_token="glpat-secret",
    )
    build = BuildEvents(project.id)

    await stack.publish(build.status(BuildState.RUNNING, step="install"))
    await wait_until(lambda: "running" in states(route), timeout=30)
    await stack.publish(build.completed(BuildState.FAILED, error="exit code 1"))

    request = await sent_final(route, "failed")
    assert str(request.url) == GITLAB_STATUS_URL
    assert request.headers["PRIVATE-TOKEN"] == "glpat-secret"
    assert "Authorization" not in request.headers
    assert json.loads(request.content) == {
        "state": "failed",
        "target_url": f"{DASHBOARD_URL}/builds/{build.build_id}",
        "description": "Build #3 failed at step install",
        "name": "gobuild",
    }
    assert states(route) == ["running", "failed"]


async def test_a_successful_gitlab_build_sets_success_with_the_deployment_url(
    respx_mock: respx.MockRouter, start_notifications: StartNotifications
) -> None:
    route = respx_mock.post(GITLAB_STATUS_URL).respond(201, json={"id": 1})
    stack = await start_notifications()
    project = await stack.project(
        provider="gitlab",
        repo_url="https://gitlab.example.com/group/sub/site.git",
        forge_token="glpat-secret",
    )
    build = BuildEvents(project.id)

    await stack.publish(build.completed(BuildState.SUCCEEDED, deployment_url=DEPLOYMENT_URL))

    request = await sent_final(route, "success")
    assert request.headers["PRIVATE-TOKEN"] == "glpat-secret"
    assert json.loads(request.content)["description"] == f"Deployed to {DEPLOYMENT_URL}"


async def test_a_forge_answering_5xx_is_retried_until_it_takes_the_status(
    respx_mock: respx.MockRouter, start_notifications: StartNotifications
) -> None:
    route = respx_mock.post(GITHUB_STATUS_URL).mock(
        side_effect=[httpx.Response(502), httpx.Response(201, json={"id": 1})]
    )
    stack = await start_notifications()
    project = await stack.project(forge_token="ghp_secret_token")
    build = BuildEvents(project.id)

    await stack.publish(build.completed(BuildState.CANCELLED, error="cancelled by jane"))

    await wait_until(lambda: route.call_count == 2, timeout=30)
    assert states(route) == ["error", "error"]
    assert bodies(route)[-1]["description"].endswith("was cancelled")
