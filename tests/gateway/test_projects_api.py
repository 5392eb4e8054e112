"""The projects and builds API: validation, authentication, accepted builds."""

from __future__ import annotations

import json

import pytest

from gobuild.platform.build_state import BuildState
from gobuild.platform.repo_credentials import RepoCredentialCipher
from gobuild.platform.stores.builds import BuildStore
from gobuild.platform.stores.connection import connect_redis
from gobuild.platform.stores.projects import ProjectStore
from tests.gateway.conftest import StartGateway
from tests.gateway.support import AUTH, Gateway, basic, published_triggers


async def test_healthz_needs_no_credentials(gateway: Gateway) -> None:
    response = await gateway.client.get("/healthz")
    assert response.status_code == 200
    assert (await response.get_json()) == {"status": "ok"}


async def test_api_without_credentials_is_401_with_a_json_error(gateway: Gateway) -> None:
    response = await gateway.client.get("/api/projects")
    assert response.status_code == 401
    assert (await response.get_json())["error"] == "authentication required"
    assert "Bearer" in response.headers["WWW-Authenticate"]


async def test_wrong_admin_key_is_401(gateway: Gateway) -> None:
    response = await gateway.client.get("/api/projects", headers={"Authorization": "Bearer nope"})
    assert response.status_code == 401
    response = await gateway.client.get("/api/projects", headers=basic("admin", "nope"))
    assert response.status_code == 401


async def test_admin_key_works_as_bearer_and_as_basic_password(gateway: Gateway) -> None:
    assert (await gateway.client.get("/api/projects", headers=AUTH)).status_code == 200
    response = await gateway.client.get("/api/projects", headers=basic("anyone", "test-admin-key"))
    assert response.status_code == 200


async def test_created_project_shows_its_webhook_secret_once(gateway: Gateway) -> None:
    project = await gateway.create_project(production_branch="master")
    assert project["id"].startswith("p_")
    assert len(project["webhook_secret"]) >= 32
    assert (
        project["production_url"]
        == f"http://hello-world.localhost:{gateway.settings.gateway_port}/"
    )

    shown = await (
        await gateway.client.get(f"/api/projects/{project['id']}", headers=AUTH)
    ).get_json()
    assert "webhook_secret" not in shown
    assert shown["name"] == "hello-world"
    listed = await (await gateway.client.get("/api/projects", headers=AUTH)).get_json()
    assert [p["id"] for p in listed["projects"]] == [project["id"]]
    assert "webhook_secret" not in listed["projects"][0]


async def test_duplicate_project_name_is_409(gateway: Gateway) -> None:
    await gateway.create_project()
    response = await gateway.client.post(
        "/api/projects",
        json={"name": "hello-world", "repo_url": "https://example.com/x.git"},
        headers=AUTH,
    )
    assert response.status_code == 409


async def test_repository_url_with_unsupported_scheme_is_refused_naming_the_field(
    gateway: Gateway,
) -> None:
    for url in ("ftp://example.com/repo.git", "ext::sh -c touch% /tmp/pwned", "file:///etc"):
        response = await gateway.client.post(
            "/api/projects", json={"name": "site", "repo_url": url}, headers=AUTH
        )
        assert response.status_code == 422, url
        body = await response.get_json()
        assert body["detail"][0]["field"] == "repo_url"
        assert (
            "scheme" in body["detail"][0]["message"] or "transport" in body["detail"][0]["message"]
        )
    assert (await (await gateway.client.get("/api/projects", headers=AUTH)).get_json())[
        "projects"
    ] == []


async def test_unknown_fields_and_wrong_types_are_422_naming_the_field(gateway: Gateway) -> None:
    response = await gateway.client.post(
        "/api/projects",
        json={"name": "site", "repo_url": "https://example.com/r.git", "colour": "blue"},
        headers=AUTH,
    )
    assert response.status_code == 422
    assert (await response.get_json())["detail"][0]["field"] == "colour"
    response = await gateway.client.post(
        "/api/projects",
        json={"name": "Not A Label!", "repo_url": "https://example.com/r.git"},
        headers=AUTH,
    )
    assert response.status_code == 422
    assert (await response.get_json())["detail"][0]["field"] == "name"


async def test_invalid_json_body_is_400(gateway: Gateway) -> None:
    response = await gateway.client.post(
        "/api/projects", data=b"{nope", headers={**AUTH, "Content-Type": "application/json"}
    )
    assert response.status_code in (400, 422)
    assert "error" in await response.get_json()


async def test_unknown_project_and_build_are_404(gateway: Gateway) -> None:
    assert (await gateway.client.get("/api/projects/p_missing", headers=AUTH)).status_code == 404
    response = await gateway.client.get("/api/builds/b_missing", headers=AUTH)
    assert response.status_code == 404
    assert (await response.get_json())["error"] == "build not found"


async def test_build_now_records_the_build_and_publishes_its_trigger(gateway: Gateway) -> None:
    project = await gateway.create_project()
    response = await gateway.client.post(
        f"/api/projects/{project['id']}/builds", json={"branch": "feature/x"}, headers=AUTH
    )
    assert response.status_code == 202
    build_id = (await response.get_json())["build_id"]

    build = await (await gateway.client.get(f"/api/builds/{build_id}", headers=AUTH)).get_json()
    assert build["state"] == "queued"
    assert build["branch"] == "feature/x"
    assert build["production"] is False
    listed = await (
        await gateway.client.get(f"/api/projects/{project['id']}/builds", headers=AUTH)
    ).get_json()
    assert [b["id"] for b in listed["builds"]] == [build_id]

    triggers = await published_triggers(gateway.settings, expected=1)
    assert [(t.build_id, t.source, t.branch) for t in triggers] == [(build_id, "api", "feature/x")]


async def test_build_now_rejects_a_bad_branch_or_sha(gateway: Gateway) -> None:
    project = await gateway.create_project()
    for body in ({"branch": "../../etc"}, {"branch": "-rf"}, {"commit_sha": "xyz"}):
        response = await gateway.client.post(
            f"/api/projects/{project['id']}/builds", json=body, headers=AUTH
        )
        assert response.status_code == 422, body
    async with connect_redis(gateway.settings.redis_url) as redis:
        assert await BuildStore(redis).list_for_project(project["id"]) == []


async def test_cancel_of_a_queued_build_ends_it_at_once(gateway: Gateway) -> None:
    project = await gateway.create_project()
    response = await gateway.client.post(
        f"/api/projects/{project['id']}/builds", json={}, headers=AUTH
    )
    build_id = (await response.get_json())["build_id"]
    response = await gateway.client.post(f"/api/builds/{build_id}/cancel", headers=AUTH)
    assert response.status_code == 202
    assert (await response.get_json())["state"] == "cancelled"
    async with connect_redis(gateway.settings.redis_url) as redis:
        store = BuildStore(redis)
        assert await store.cancel_requested(build_id)
        assert (await store.get(build_id)).state == BuildState.CANCELLED  # type: ignore[union-attr]


async def test_readyz_reports_each_dependency(gateway: Gateway) -> None:
    response = await gateway.client.get("/readyz")
    body = await response.get_json()
    assert body["checks"]["kafka"] == "ok"
    assert body["checks"]["redis"] == "ok"
    # No orchestrator or storage runs in this test.
    assert response.status_code == 503
    assert body["checks"]["storage"].startswith("unreachable")


async def test_only_admins_may_register_local_paths_and_only_when_local_repos_are_on(
    start_gateway: StartGateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    off = await start_gateway()
    jane = await off.user_headers("jane")
    for headers, reason in ((jane, "only accepted from instance admins"), (AUTH, "turned off")):
        response = await off.client.post(
            "/api/projects",
            json={"name": "site", "repo_url": "/srv/git/other-tenant.git"},
            headers=headers,
        )
        assert response.status_code == 422
        body = await response.get_json()
        assert body["error"] == "repository URL not allowed"
        assert body["detail"][0]["field"] == "repo_url"
        assert reason in body["detail"][0]["message"]

    monkeypatch.setenv("GOBUILD_ALLOW_LOCAL_REPOS", "true")
    on = await start_gateway()
    for path in ("/srv/git/other-tenant.git", "/etc"):
        response = await on.client.post(
            "/api/projects", json={"name": "site", "repo_url": path}, headers=jane
        )
        assert response.status_code == 422, path
    assert (await on.create_project(name="local", repo_url="/srv/git/site.git"))["repo_url"] == (
        "/srv/git/site.git"
    )


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080/site.git",
        "http://localhost/site.git",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]/site.git",
        "http://2130706433/site.git",
        "http://0x7f.1/site.git",
        "http://10.0.0.8/site.git",
        "http://site.localhost/site.git",
    ],
)
async def test_repositories_on_internal_hosts_are_refused_for_non_admins(
    gateway: Gateway, url: str
) -> None:
    jane = await gateway.user_headers("jane")

    response = await gateway.client.post(
        "/api/projects", json={"name": "site", "repo_url": url}, headers=jane
    )

    assert response.status_code == 422
    assert (await response.get_json())["detail"][0]["field"] == "repo_url"
    assert (await gateway.create_project(name="admins-may", repo_url=url))["repo_url"] == url


async def test_credentials_in_the_repository_url_are_kept_encrypted_and_shown_as_stars(
    gateway: Gateway,
) -> None:
    jane = await gateway.user_headers("jane")
    url = "https://x-access-token:ghp_s3cret@github.com/jane/site.git"
    shown = "https://***@github.com/jane/site.git"

    created = await gateway.create_project(headers=jane, name="site", repo_url=url)
    build_id = await gateway.start_build(created["id"], headers=jane)

    answers = [
        created,
        await (await gateway.client.get(f"/api/projects/{created['id']}", headers=jane)).get_json(),
        await (await gateway.client.get("/api/projects", headers=AUTH)).get_json(),
        await (await gateway.client.get(f"/api/builds/{build_id}", headers=jane)).get_json(),
    ]
    assert created["repo_url"] == shown
    assert answers[3]["repo_url"] == shown
    assert all("ghp_s3cret" not in json.dumps(answer) for answer in answers)
    (trigger,) = await published_triggers(gateway.settings, expected=1)
    assert trigger.repo_url == shown
    async with connect_redis(gateway.settings.redis_url) as redis:
        stored = await ProjectStore(redis).get(created["id"])
        assert stored is not None
        assert "ghp_s3cret" not in stored.model_dump_json()
        assert stored.repo_credentials is not None
        cipher = await RepoCredentialCipher.load(redis, gateway.settings)
        assert cipher.decrypt(stored.repo_credentials) == "x-access-token:ghp_s3cret"
        assert stored.trusted_source is False
