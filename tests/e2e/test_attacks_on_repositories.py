"""Attacks through a project's repository URL, against a real `gobuild dev` (security issue 6,
items 2 and 7): a user cannot build another tenant's repository or any folder of the host by
its local path, cannot make the builder fetch from this machine or an internal network, and
never sees the credentials a repository URL was registered with; an admin's local repository
is cloned in a container that sees that repository only.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import docker
import httpx
import pytest

from gobuild.builder_agent.warm_containers import LABEL_WARM
from gobuild.platform.config import Settings
from tests.conftest import BUILD_IMAGE, GitRepo, git
from tests.e2e.stack import Stack
from tests.git_http import docker_host_address, repositories_over_http

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

SECRET = "e2e-webhook-secret-0123456789"
PASSWORD = "a-good-password-1"
TOKEN = "ghp_e2eS3cretT0ken"
SITE_TOML = """\
build = '''
mkdir -p dist
cp index.html dist/
'''
output = "dist"
"""
BUILD_NETWORK = Settings.model_fields["build_network"].default
# The clone container is kept for the steps (GOBUILD_BUILD_STEPS_IN_CLONE_CONTAINER): it is on
# the build network they need.
CLONED_LOCALLY = (
    f"Checking out in a clone container: image {BUILD_IMAGE}, user 1000:1000, "
    f"the repository mounted read-only at /source, network {BUILD_NETWORK}"
)


def sign_in(stack: Stack, username: str) -> httpx.Client:
    """A new user (not an admin), signed in: a client with their access token."""
    created = stack.http.post("/api/users", json={"username": username, "password": PASSWORD})
    assert created.status_code == 201, created.text
    login = stack.http.post(
        "/api/auth/login",
        json={"username": username, "password": PASSWORD},
        headers={"Authorization": ""},
    )
    assert login.status_code == 200, login.text
    return httpx.Client(
        base_url=f"http://127.0.0.1:{stack.port}",
        headers={"Authorization": f"Bearer {login.json()['access_token']}"},
        timeout=30.0,
    )


@pytest.fixture(scope="module")
def mallory(stack: Stack) -> Iterator[httpx.Client]:
    with sign_in(stack, "mallory") as client:
        yield client


@pytest.fixture(scope="module")
def olivia(stack: Stack) -> Iterator[httpx.Client]:
    with sign_in(stack, "olivia") as client:
        yield client


@pytest.fixture(scope="module")
def victor(stack: Stack) -> Iterator[httpx.Client]:
    with sign_in(stack, "victor") as client:
        yield client


def build_now(client: httpx.Client, project_id: str) -> str:
    response = client.post(f"/api/projects/{project_id}/builds", json={})
    assert response.status_code == 202, response.text
    return str(response.json()["build_id"])


def log_of(stack: Stack, build_id: str) -> str:
    return stack.http.get(f"/api/builds/{build_id}/logs").text


def created_steps(label: str, since: float) -> list[str]:
    """The `gobuild.step` label of every container Docker created with `label` (`name=value`:
    a build's, or a project's warm containers') since `since`."""
    events = docker.from_env().events(
        since=int(since) - 1,
        until=int(time.time()) + 1,
        filters={"type": "container", "event": "create", "label": label},
        decode=True,
    )
    return [event["Actor"]["Attributes"].get("gobuild.step", "") for event in events]


def test_a_user_cannot_register_another_tenants_repository_or_a_host_folder(
    stack: Stack, mallory: httpx.Client, git_repo: GitRepo
) -> None:
    git_repo.commit({"index.html": "<h1>the victim's code</h1>", "gobuild.toml": SITE_TOML})
    stack.create_project("victim", git_repo.bare, SECRET)  # by an admin: allowed

    for path in (str(git_repo.bare), "/etc", "/", str(stack.data_dir), "/var/run/docker.sock"):
        response = mallory.post(
            "/api/projects", json={"name": "stolen", "repo_url": path, "webhook_secret": SECRET}
        )

        assert response.status_code == 422, (path, response.text)
        problem = response.json()["detail"][0]
        assert problem["field"] == "repo_url"
        assert "only accepted from instance admins" in problem["message"]
    assert mallory.get("/api/projects").json()["projects"] == []
    assert "stolen" not in [p["name"] for p in stack.http.get("/api/projects").json()["projects"]]


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:{port}/api/projects",
        "http://localhost:{port}/site.git",
        "http://victim.localhost:{port}/",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]:{port}/site.git",
        "http://[::ffff:127.0.0.1]:{port}/site.git",
        "http://2130706433:{port}/site.git",
        "http://0x7f.1:{port}/site.git",
        "http://0.0.0.0:{port}/site.git",
        "http://10.0.0.1/site.git",
        "http://172.17.0.1:{port}/site.git",
    ],
)
def test_a_user_cannot_register_a_repository_on_this_machine_or_an_internal_network(
    stack: Stack, mallory: httpx.Client, url: str
) -> None:
    response = mallory.post(
        "/api/projects",
        json={"name": "probe", "repo_url": url.format(port=stack.port), "webhook_secret": SECRET},
    )

    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["field"] == "repo_url"
    assert "probe" not in [p["name"] for p in stack.http.get("/api/projects").json()["projects"]]


def test_credentials_in_a_repository_url_are_shown_to_nobody(
    stack: Stack, olivia: httpx.Client, victor: httpx.Client
) -> None:
    url = f"https://x-access-token:{TOKEN}@git.invalid/olivia/site.git"
    shown = "https://***@git.invalid/olivia/site.git"
    created = olivia.post(
        "/api/projects", json={"name": "private-site", "repo_url": url, "webhook_secret": SECRET}
    )
    assert created.status_code == 201, created.text
    project_id = created.json()["id"]
    added = olivia.post(
        f"/api/projects/{project_id}/members", json={"username": "victor", "role": "viewer"}
    )
    assert added.status_code in (200, 201), added.text

    build_id = build_now(olivia, project_id)
    build = stack.wait_for_build(build_id)

    assert created.json()["repo_url"] == build["repo_url"] == shown
    for client in (olivia, victor, stack.http):
        answers = [
            client.get(f"/api/projects/{project_id}"),
            client.get("/api/projects"),
            client.get(f"/api/projects/{project_id}/builds"),
            client.get(f"/api/builds/{build_id}"),
            client.get(f"/api/builds/{build_id}/logs"),
        ]
        assert [a.status_code for a in answers] == [200] * 5
        assert all(TOKEN not in a.text for a in answers)
        assert shown in answers[0].text
    log = victor.get(f"/api/builds/{build_id}/logs").text
    assert f"Cloning {shown}" in log
    # The builder checks the host again right before it fetches, and refuses what it cannot.
    assert build["state"] == "failed"
    assert "cannot resolve 'git.invalid'" in log
    assert TOKEN not in stack.output.read_text(errors="replace")


def test_credentials_are_used_by_the_checkout_only(
    stack: Stack, victor: httpx.Client, git_repo: GitRepo
) -> None:
    git_repo.commit({"index.html": "<h1>private code</h1>", "gobuild.toml": SITE_TOML})
    git(git_repo.bare, "update-server-info")
    with repositories_over_http(git_repo.bare.parent, f"deploy:{TOKEN}") as port:
        host = docker_host_address(docker.from_env())
        # A host on an internal network: only an admin may register it.
        created = stack.http.post(
            "/api/projects",
            json={
                "name": "credentialed",
                "repo_url": f"http://deploy:{TOKEN}@{host}:{port}/site.git",
                "webhook_secret": SECRET,
            },
        )
        assert created.status_code == 201, created.text
        project = created.json()
        added = stack.http.post(
            f"/api/projects/{project['id']}/members", json={"username": "victor", "role": "viewer"}
        )
        assert added.status_code in (200, 201), added.text
        build_id = build_now(stack.http, project["id"])
        build = stack.wait_for_build(build_id)

    assert build["state"] == "succeeded", log_of(stack, build_id)
    assert "private code" in stack.get_site("credentialed").text
    answers = [
        victor.get(f"/api/projects/{project['id']}"),
        victor.get(f"/api/builds/{build_id}"),
        victor.get(f"/api/builds/{build_id}/logs"),
    ]
    assert all(a.status_code == 200 and TOKEN not in a.text for a in answers)
    assert f"http://***@{host}:{port}/site.git" in answers[0].text
    assert TOKEN not in stack.output.read_text(errors="replace")


def test_a_local_repository_is_cloned_in_a_container_that_sees_only_that_repository(
    stack: Stack, tmp_path: Path, git_repo: GitRepo
) -> None:
    git_repo.commit({"index.html": "<h1>the admin's site</h1>", "gobuild.toml": SITE_TOML})
    own = stack.create_project("admins-site", git_repo.bare, SECRET)
    started = time.time()
    build_id = build_now(stack.http, own["id"])
    build = stack.wait_for_build(build_id)

    assert build["state"] == "succeeded", log_of(stack, build_id)
    assert CLONED_LOCALLY in log_of(stack, build_id)
    # Its container, kept warm for the project's next build, is labelled with the project.
    assert created_steps(f"{LABEL_WARM}={own['id']}", started) == ["checkout"]

    # A repository whose objects are borrowed from another tenant's repository on the host
    # (git alternates): git running on the host would read them; the clone container cannot.
    borrowing = tmp_path / "borrowing.git"
    git(tmp_path, "init", "-q", "--bare", "-b", "main", str(borrowing))
    (borrowing / "objects" / "info" / "alternates").write_text(f"{git_repo.bare / 'objects'}\n")
    git(borrowing, "update-ref", "refs/heads/main", build["commit_sha"])
    assert git(borrowing, "cat-file", "-t", build["commit_sha"]) == "commit"
    project = stack.create_project("borrowing", borrowing, SECRET)
    build_id = build_now(stack.http, project["id"])
    build = stack.wait_for_build(build_id)

    log = log_of(stack, build_id)
    assert build["state"] == "failed", log
    assert CLONED_LOCALLY in log
    assert "unable to normalize alternate object path" in log
    assert "the admin's site" not in stack.get_site("borrowing").text
