"""Attacks through deployment hosts, against a real `gobuild dev` (security issue 6, items 1
and 8): a deployment host reaches only its deployment's files, storage answers nobody without
the internal token, and project names cannot take the gateway's own hosts.

Request lines are written to a raw socket: httpx (and browsers) would remove the dot
segments before sending, and then the attack would never reach the gateway.
"""

from __future__ import annotations

import socket
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import docker
import httpx
import pytest

from gobuild.platform.devstack import free_port
from tests.conftest import BUILD_IMAGE, GitRepo, git
from tests.e2e.stack import Stack, start_stack

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

SECRET = "e2e-webhook-secret-0123456789"
LOG_MARKER = "log-line-only-the-owner-may-read-5b1e"
SITE_TOML = f"""\
build = '''
echo "{LOG_MARKER}"
mkdir -p dist
echo '<h1>home</h1>' > dist/index.html
'''
output = "dist"
"""
PUBLIC_HOST = "api.localhost"  # the gateway's own host, under the deploy domain
DASHBOARD_HOST = "console.localhost"
GZIP_MAGIC = b"\x1f\x8b"


@dataclass(frozen=True)
class Site:
    project: str
    deployment_id: str
    build_id: str


@pytest.fixture(scope="module")
def storage_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, storage_port: int) -> Iterator[Stack]:
    docker.from_env().images.get(BUILD_IMAGE)  # fails clearly if scripts/setup.sh has not run
    running = start_stack(
        tmp_path_factory.mktemp("gobuild"),
        BUILD_IMAGE,
        GOBUILD_STORAGE_PORT=str(storage_port),
        GOBUILD_STORAGE_URL=f"http://127.0.0.1:{storage_port}",
        GOBUILD_PUBLIC_URL=f"http://{PUBLIC_HOST}",
        GOBUILD_DASHBOARD_URL=f"http://{DASHBOARD_HOST}:3000",
        GOBUILD_INTERNAL_TOKEN="",  # `gobuild dev` must generate one
    )
    yield running
    running.stop()


@pytest.fixture(scope="module")
def site(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Site:
    """A project with one successful build whose log holds LOG_MARKER."""
    root = tmp_path_factory.mktemp("repo")
    bare = root / "remote" / "site.git"
    bare.parent.mkdir(parents=True)
    git(bare.parent, "init", "-q", "--bare", "-b", "main", str(bare))
    git(root, "clone", "-q", str(bare), str(root / "work"))
    repo = GitRepo(bare=bare, work=root / "work")
    sha = repo.commit({"gobuild.toml": SITE_TOML}, "site")
    project = stack.create_project("victim", repo.bare, SECRET)
    response = stack.push_webhook(repo.bare, sha, SECRET)
    assert response.status_code == 202, response.text
    build = stack.wait_for_build(response.json()["build_id"])
    assert build["state"] == "succeeded", build
    return Site(project["name"], build["deployment_id"], build["id"])


def raw_get(port: int, host: str, target: str) -> tuple[int, bytes]:
    """Send exactly `GET <target> HTTP/1.1` with this Host; the status and the whole answer."""
    request = f"GET {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
        connection.sendall(request.encode("latin-1"))
        chunks = []
        while chunk := connection.recv(65536):
            chunks.append(chunk)
    answer = b"".join(chunks)
    status_line = answer.split(b"\r\n", 1)[0]
    return int(status_line.split()[1]), answer


def attack_paths(build_id: str) -> list[str]:
    paths = []
    for route in (f"logs/{build_id}", f"artifacts/{build_id}", f"artifacts/{build_id}/meta"):
        encoded_route = route.replace("/", "%2f")
        paths += [
            f"/../../../{route}",
            f"/%2e%2e/%2e%2e/{route}",
            f"/%2e%2e/%2e%2e/%2e%2e/{route}",
            f"/%2E%2E/%2E%2E/%2E%2E/{route}",
            f"/.%2e/.%2e/.%2e/{route}",
            f"/x/../../../../{route}",
            f"/..%2f..%2f..%2f{encoded_route}",
            f"/..%5c..%5c..%5c{route}",
            "/..\\..\\..\\" + route.replace("/", "\\"),
            f"//..//..//..//{route}",
            f"/%2e%2e%00/%2e%2e/%2e%2e/{route}",
        ]
    return paths


def test_a_deployment_host_reaches_only_its_own_files(stack: Stack, site: Site) -> None:
    # The attacker's socket works: the page of the deployment is served over it.
    for label in (site.deployment_id, site.project):
        status, answer = raw_get(stack.port, f"{label}.localhost:{stack.port}", "/")
        assert status == 200 and answer.endswith(b"<h1>home</h1>\n"), answer
    # And there is something to steal: the owner sees the marker in the log.
    assert LOG_MARKER in stack.http.get(f"/api/builds/{site.build_id}/logs").text

    for label in (site.deployment_id, site.project):
        host = f"{label}.localhost:{stack.port}"
        for target in attack_paths(site.build_id):
            status, answer = raw_get(stack.port, host, target)
            assert status in (400, 404), (target, answer[:500])
            assert LOG_MARKER.encode() not in answer, target
            assert GZIP_MAGIC not in answer, target
            assert b'"sha256"' not in answer, target


def test_storage_answers_nobody_without_the_internal_token(
    stack: Stack, site: Site, storage_port: int
) -> None:
    storage = f"http://127.0.0.1:{storage_port}"
    for path in (
        f"/logs/{site.build_id}",
        f"/artifacts/{site.build_id}",
        f"/artifacts/{site.build_id}/meta",
        f"/deployments/{site.deployment_id}",
        f"/deployments/{site.deployment_id}/files/index.html",
    ):
        for headers in ({}, {"X-GoBuild-Internal-Token": "guessed"}):
            response = httpx.get(storage + path, headers=headers, timeout=10)
            assert response.status_code == 401, (path, response.text)
            assert response.json()["error"] == "unauthorized"
            assert LOG_MARKER not in response.text
    assert httpx.get(f"{storage}/healthz", timeout=10).status_code == 200

    # `gobuild dev` generated the token, readable by its owner only, and shared it.
    token_file: Path = stack.data_dir / "internal-token"
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    token = token_file.read_text().strip()
    assert len(token) >= 32
    log = httpx.get(
        f"{storage}/logs/{site.build_id}",
        headers={"X-GoBuild-Internal-Token": token},
        timeout=10,
    )
    assert log.status_code == 200 and LOG_MARKER in log.text


def test_project_names_cannot_take_the_gateways_own_hosts(stack: Stack) -> None:
    for name in ("api", "www", "admin", "console"):
        response = stack.http.post(
            "/api/projects",
            json={"name": name, "repo_url": "https://github.com/me/site.git"},
        )
        assert response.status_code == 422, (name, response.text)
        assert response.json()["error"] == "project name is reserved"
        assert f"'{name}'" in response.json()["detail"]
    assert stack.http.get("/api/projects/api").status_code == 404


def test_the_public_host_reaches_the_api_never_a_deployment(stack: Stack, site: Site) -> None:
    for host in (f"{PUBLIC_HOST}:{stack.port}", PUBLIC_HOST, f"{DASHBOARD_HOST}:3000"):
        response = httpx.get(
            f"http://127.0.0.1:{stack.port}/api/projects",
            headers={"Host": host, "Authorization": stack.http.headers["Authorization"]},
            timeout=10,
        )
        assert response.status_code == 200, (host, response.text)
        assert site.project in [p["name"] for p in response.json()["projects"]]
    # A deployment host under the same domain still serves its deployment.
    assert stack.get_site(site.project).text == "<h1>home</h1>\n"
