"""Caches end to end, through `gobuild dev`, real Docker and the real npm registry: a Vite
project builds and deploys, its second build restores its dependency cache (hit) and downloads
nothing, a changed lockfile restores the older one (partial), two builds at once save one cache,
`cache = [...]` folders come back in the next build, a `dockerfile` is built once and reused,
and clearing the caches starts over."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import docker.errors
import pytest

from gobuild.builder_agent.layer_cache import LABEL_LAYER_PROJECT
from tests.conftest import BUILD_IMAGE, GitRepo
from tests.e2e.stack import Stack, start_stack

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

SECRET = "cache-test-webhook-secret"
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
NPM_SITE = FIXTURES / "npm-site"
VITE_SITE = FIXTURES / "vite-site"
VITE_SOURCES = ("index.html", "src/main.js", "src/greeting.js", "src/style.css")
# npm (loglevel http) fetching a package from the registry: `... GET 200 <url>.tgz 30ms (cache
# miss)`; a package its cache has is not fetched at all (`prefer-offline`).
TARBALL_DOWNLOADED = re.compile(r"npm http fetch GET 200 (\S+\.tgz)")
INSTALL_FINISHED = re.compile(r"Step 'install' finished in ([0-9.]+)s")
SCRIPT_ASSET = re.compile(r'<script type="module" crossorigin src="(/assets/index-[\w-]+\.js)"')
BUILD_JS = """
const fs = require("fs");
const isOdd = require("is-odd");
fs.mkdirSync("dist", { recursive: true });
fs.writeFileSync("dist/index.html", `<p>${process.argv[2] || "site"}: 3 is odd: ${isOdd(3)}</p>`);
"""


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """`gobuild dev` whose builder runs two builds at once (to race two cache saves)."""
    docker.from_env().images.get(BUILD_IMAGE)
    running = start_stack(
        tmp_path_factory.mktemp("gobuild"), BUILD_IMAGE, GOBUILD_BUILDER_CONCURRENCY="2"
    )
    yield running
    running.stop()


def npm_site(label: str = "site") -> dict[str, str]:
    return {
        "package.json": (NPM_SITE / "package.json").read_text(),
        "package-lock.json": (NPM_SITE / "package-lock.json").read_text(),
        "build.js": BUILD_JS.replace('"site"', f'"{label}"'),
    }


def vite_site(lockfile_variant: str = "") -> dict[str, str]:
    """The Vite project of tests/fixtures/vite-site; `changed` has another lockfile."""
    lockfiles = VITE_SITE / lockfile_variant if lockfile_variant else VITE_SITE
    files = {name: (VITE_SITE / name).read_text() for name in VITE_SOURCES}
    for name in ("package.json", "package-lock.json"):
        files[name] = (lockfiles / name).read_text()
    return files


def greeting_js(text: str) -> dict[str, str]:
    return {"src/greeting.js": f"export const greeting = (name) => `{text} from ${{name}}`;\n"}


def push_and_build(stack: Stack, repo: GitRepo, files: dict[str, str]) -> dict[str, Any]:
    sha = repo.commit(files, message="change")
    response = stack.push_webhook(repo.bare, sha, SECRET)
    assert response.status_code == 202, response.text
    build = stack.wait_for_build(response.json()["build_id"], timeout=300)
    assert build["state"] == "succeeded", (build, stack.http.get(build["log_url"]).text)
    return build


def cache_of(build: dict[str, Any], kind: str) -> dict[str, Any]:
    [use] = [use for use in build["caches"] if use["kind"] == kind]
    return use


def log_of(stack: Stack, build: dict[str, Any]) -> str:
    return stack.http.get(f"/api/builds/{build['id']}/logs").text


def install_seconds(stack: Stack, build: dict[str, Any]) -> float:
    match = INSTALL_FINISHED.search(log_of(stack, build))
    assert match, log_of(stack, build)
    return float(match.group(1))


def deployed_vite_page(stack: Stack, build: dict[str, Any]) -> tuple[str, str]:
    """The deployed `dist/index.html` and the hashed script it loads, both from the
    deployment's URL."""
    page = stack.get_site(build["deployment_id"])
    assert page.status_code == 200, page.text
    found = SCRIPT_ASSET.search(page.text)
    assert found, page.text
    script = stack.get_site(build["deployment_id"], found.group(1))
    assert script.status_code == 200
    return page.text, script.text


def test_a_vite_project_deploys_hits_its_dependency_cache_downloads_nothing_and_partially_hits(
    stack: Stack, git_repo: GitRepo
) -> None:
    project = stack.create_project("cache-vite", git_repo.bare, SECRET)
    # npm logs each request it makes, and whether its cache answered.
    loglevel = stack.http.put(
        f"/api/projects/{project['id']}/env/npm_config_loglevel", json={"value": "http"}
    )
    assert loglevel.status_code == 200, loglevel.text

    first = push_and_build(stack, git_repo, {**vite_site(), **greeting_js("First")})
    page, script = deployed_vite_page(stack, first)
    assert "<title>GoBuild Vite site</title>" in page and "/src/main.js" not in page
    assert "First from" in script
    first_log = log_of(stack, first)
    plan_line = first_log.index("Detected npm (package-lock.json)")
    assert plan_line < first_log.index("$ npm ci"), first_log
    assert len(TARBALL_DOWNLOADED.findall(first_log)) >= 10, first_log
    assert "/vite/-/vite-6.3.5.tgz" in first_log
    miss = cache_of(first, "dependencies")
    assert miss["result"] == "miss" and miss["save_seconds"] is not None
    assert miss["size_bytes"] > 0

    second = push_and_build(stack, git_repo, greeting_js("Second"))
    hit = cache_of(second, "dependencies")
    assert (hit["result"], hit["key"], hit["save_seconds"]) == ("hit", miss["key"], None)
    assert hit["size_bytes"] == miss["size_bytes"] and hit["restore_seconds"] >= 0
    second_log = log_of(stack, second)
    assert f"Dependency cache: hit, key {miss['key']}" in second_log
    assert TARBALL_DOWNLOADED.findall(second_log) == [], second_log  # all from the cache
    assert "Second from" in deployed_vite_page(stack, second)[1]
    # What makes the warm install faster is that it downloads nothing (above); by how much is
    # bench/cache_install.py's to measure, not a timed assertion's on a shared machine.
    assert install_seconds(stack, second) > 0

    third = push_and_build(stack, git_repo, vite_site("changed"))
    partial = cache_of(third, "dependencies")
    assert partial["result"] == "partial" and partial["key"] != miss["key"]
    assert partial["save_seconds"] is not None  # the new lockfile's cache is saved

    shown = stack.http.get(f"/api/projects/{project['id']}").json()
    assert shown["cache_size_bytes"] > 0 and shown["cache_hit_rate"] is not None
    cleared = stack.http.delete(f"/api/projects/{project['id']}/caches")
    assert cleared.status_code == 200, cleared.text
    assert cleared.json()["removed"] == 2 and cleared.json()["freed_bytes"] > 0
    assert stack.http.get(f"/api/projects/{project['id']}/caches").json()["caches"] == []

    after = push_and_build(stack, git_repo, greeting_js("After"))
    assert cache_of(after, "dependencies")["result"] == "miss"


def test_two_builds_of_one_project_at_once_save_one_cache(stack: Stack, git_repo: GitRepo) -> None:
    project = stack.create_project("cache-race", git_repo.bare, SECRET)
    git_repo.commit(npm_site(label="race"), message="site")

    ids = [
        stack.http.post(f"/api/projects/{project['id']}/builds", json={}).json()["build_id"]
        for _ in range(2)
    ]
    builds = [stack.wait_for_build(build_id, timeout=300) for build_id in ids]

    assert [build["state"] for build in builds] == ["succeeded", "succeeded"]
    uses = [cache_of(build, "dependencies") for build in builds]
    saved = [use for use in uses if use["save_seconds"] is not None]
    assert len(saved) == 1, uses
    assert len({use["key"] for use in uses}) == 1
    listed = stack.http.get(f"/api/projects/{project['id']}/caches").json()["caches"]
    assert [(c["kind"], c["key"]) for c in listed] == [("dependencies", saved[0]["key"])]
    # What was saved is whole: the next build restores it and installs from it.
    next_id = stack.http.post(f"/api/projects/{project['id']}/builds", json={}).json()["build_id"]
    after = stack.wait_for_build(next_id, timeout=300)
    assert after["state"] == "succeeded"
    assert cache_of(after, "dependencies")["result"] == "hit"


def test_folders_named_in_cache_are_restored_by_the_next_build(
    stack: Stack, git_repo: GitRepo
) -> None:
    stack.create_project("cache-incremental", git_repo.bare, SECRET)
    files = {
        "gobuild.toml": 'build = "sh build.sh"\noutput = "dist"\ncache = [".cache/builds"]\n',
        "build.sh": (
            "mkdir -p .cache/builds dist\n"
            "n=$(cat .cache/builds/count 2>/dev/null || echo 0)\n"
            "n=$((n + 1)); echo $n > .cache/builds/count\n"
            'echo "<p>build number $n</p>" > dist/index.html\n'
        ),
    }

    first = push_and_build(stack, git_repo, files)
    second = push_and_build(stack, git_repo, {"notes.txt": "another commit"})

    assert cache_of(first, "incremental")["result"] == "miss"
    assert cache_of(second, "incremental")["result"] == "hit"
    assert "build number 1" in stack.get_site(first["deployment_id"]).text
    assert "build number 2" in stack.get_site(second["deployment_id"]).text


def remove_layer_images(project_id: str) -> None:
    client = docker.from_env()
    for image in client.images.list(filters={"label": f"{LABEL_LAYER_PROJECT}={project_id}"}):
        with contextlib.suppress(docker.errors.APIError):
            client.images.remove(image.id, force=True)


def test_a_dockerfile_is_built_once_and_the_next_build_reuses_its_image(
    stack: Stack, git_repo: GitRepo, request: pytest.FixtureRequest
) -> None:
    project = stack.create_project("cache-layer", git_repo.bare, SECRET)
    request.addfinalizer(lambda: remove_layer_images(project["id"]))
    files = {
        "gobuild.toml": (
            'dockerfile = "ci/build.Dockerfile"\n'
            'build = "mkdir -p dist && cp /opt/marker.html dist/index.html"\n'
            'output = "dist"\n'
        ),
        "ci/build.Dockerfile": (
            f"FROM {BUILD_IMAGE}\nRUN echo '<p>made in the layer image</p>' > /opt/marker.html\n"
        ),
    }

    first = push_and_build(stack, git_repo, files)
    second = push_and_build(stack, git_repo, {"notes.txt": "another commit"})

    built, reused = cache_of(first, "layer"), cache_of(second, "layer")
    assert built["result"] == "miss" and built["save_seconds"] is not None
    assert (reused["result"], reused["key"]) == ("hit", built["key"])
    assert "Layer cache: hit" in log_of(stack, second)
    assert "made in the layer image" in stack.get_site(second["deployment_id"]).text
