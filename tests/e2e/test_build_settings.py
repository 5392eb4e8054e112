"""Builds real projects need, through `gobuild dev`: npm through the host's CA trust, project
build settings and their precedence, secret variables masked everywhere a log line goes,
`root_dir` and the test step."""

from __future__ import annotations

import asyncio
import json
import threading
from typing import Any

import httpx
import pytest

from gobuild.platform.bus import decode_record, make_consumer
from gobuild.platform.config import Settings
from gobuild.platform.events import TOPIC_BUILD_LOGS, LogChunk
from tests.conftest import GitRepo
from tests.e2e.stack import ADMIN_KEY, Stack

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

SECRET = "e2e-webhook-secret-0123456789"
SECRET_VALUE = "hunter2-Pa55w0rd-xyz"

PACKAGE_JSON = {
    "name": "site",
    "version": "1.0.0",
    "private": True,
    "scripts": {
        "build": "mkdir -p dist && node -e \"const n = require('is-number'); "
        "require('fs').writeFileSync('dist/index.html', '<p>is-number says ' + n(7) + '</p>')\""
    },
    "dependencies": {"is-number": "7.0.0"},
}
PACKAGE_LOCK = {
    "name": "site",
    "version": "1.0.0",
    "lockfileVersion": 3,
    "requires": True,
    "packages": {
        "": {"name": "site", "version": "1.0.0", "dependencies": {"is-number": "7.0.0"}},
        "node_modules/is-number": {
            "version": "7.0.0",
            "resolved": "https://registry.npmjs.org/is-number/-/is-number-7.0.0.tgz",
            "integrity": "sha512-41Cifkg6e8TylSpdtTpeLVMqvSBEVzTttHvERD741+pnZ8ANv0004MRL43QKPD"
            "lK9cGvNp6NZWZUBlbGXYxxng==",
            "license": "MIT",
            "engines": {"node": ">=0.12.0"},
        },
    },
}


def build_of(stack: Stack, repo: GitRepo, sha: str) -> dict[str, Any]:
    response = stack.push_webhook(repo.bare, sha, SECRET)
    assert response.status_code == 202, response.text
    return stack.wait_for_build(response.json()["build_id"], timeout=240)


def log_of(stack: Stack, build_id: str) -> str:
    return stack.http.get(f"/api/builds/{build_id}/logs").text


def test_npm_ci_reaches_the_registry_through_the_hosts_ca_trust(
    stack: Stack, git_repo: GitRepo
) -> None:
    """`gobuild dev` hands builds the host's CA bundle, so npm works wherever it works on the
    host (also behind a TLS-inspecting proxy whose CA only the host trusts)."""
    sha = git_repo.commit(
        {
            "package.json": json.dumps(PACKAGE_JSON, indent=2),
            "package-lock.json": json.dumps(PACKAGE_LOCK, indent=2),
        },
        "npm site",
    )
    stack.create_project("npm-site", git_repo.bare, SECRET)

    build = build_of(stack, git_repo, sha)

    log = log_of(stack, build["id"])
    assert build["state"] == "succeeded", log
    assert "Detected npm (package-lock.json)" in log
    assert "  install: npm ci" in log
    assert "is-number says true" in stack.get_site("npm-site").text


def _chunks_on_build_logs(stack: Stack, build_id: str) -> list[LogChunk]:
    """The build's chunks as `build-logs` carries them, up to the final one."""
    settings = Settings(_env_file=None, kafka_bootstrap=stack.env["GOBUILD_KAFKA_BOOTSTRAP"])  # type: ignore[call-arg]

    async def read() -> list[LogChunk]:
        consumer = make_consumer(settings, [TOPIC_BUILD_LOGS], None, client_id="e2e-reader")
        await consumer.start()
        chunks: list[LogChunk] = []
        try:
            async with asyncio.timeout(60):
                while True:
                    event = decode_record(await consumer.getone())
                    if isinstance(event, LogChunk) and event.build_id == build_id:
                        chunks.append(event)
                        if event.final:
                            return chunks
        finally:
            await consumer.stop()

    return asyncio.run(read())


def test_a_secret_is_masked_in_the_stored_log_the_followed_log_and_on_build_logs(
    stack: Stack, git_repo: GitRepo
) -> None:
    toml = """\
build = '''
echo "whole: $DEPLOY_TOKEN"
printf 'split: %s' "$(printf '%s' "$DEPLOY_TOKEN" | cut -c1-8)"
sleep 0.3
printf '%s done\\n' "$(printf '%s' "$DEPLOY_TOKEN" | cut -c9-)"
echo "plain: $PUBLIC_NAME"
mkdir -p dist && echo ok > dist/index.html
'''
output = "dist"
"""
    sha = git_repo.commit({"gobuild.toml": toml}, "prints its secret")
    project = stack.create_project("secret-site", git_repo.bare, SECRET)
    env_url = f"/api/projects/{project['id']}/env"
    response = stack.http.put(
        f"{env_url}/DEPLOY_TOKEN", json={"value": SECRET_VALUE, "secret": True}
    )
    assert response.status_code == 200, response.text
    assert stack.http.put(f"{env_url}/PUBLIC_NAME", json={"value": "gobuild"}).status_code == 200
    # A variable of preview builds only does not reach this production build.
    stack.http.put(f"{env_url}/PREVIEW_ONLY", json={"value": "pv", "targets": ["preview"]})

    followed: list[str] = []
    response = stack.push_webhook(git_repo.bare, sha, SECRET)
    build_id = response.json()["build_id"]

    def follow() -> None:
        with httpx.stream(
            "GET",
            f"http://127.0.0.1:{stack.port}/api/builds/{build_id}/logs?follow=1",
            headers={"Authorization": f"Bearer {ADMIN_KEY}"},
            timeout=120.0,
        ) as streamed:
            followed.extend(streamed.iter_lines())

    reader = threading.Thread(target=follow)
    reader.start()
    build = stack.wait_for_build(build_id)
    reader.join(60)
    stored = log_of(stack, build_id)
    assert build["state"] == "succeeded", stored
    on_the_topic = "\n".join(
        line for chunk in _chunks_on_build_logs(stack, build_id) for line in chunk.lines
    )

    for log in (stored, "\n".join(followed), on_the_topic):
        assert SECRET_VALUE not in log
        assert "whole: ***" in log, log
        assert "split: *** done" in log, log
        assert "plain: gobuild" in log
        assert "Project variables: PUBLIC_NAME; secret: DEPLOY_TOKEN" in log
    for shown in (
        stack.http.get(env_url).text,
        stack.http.get(f"{env_url}/DEPLOY_TOKEN").text,
        stack.http.get(f"/api/builds/{build_id}").text,
    ):
        assert SECRET_VALUE not in shown


def test_project_settings_build_and_gobuild_toml_overrides_them(
    stack: Stack, git_repo: GitRepo
) -> None:
    sha = git_repo.commit({"README.md": "no config in the repository"}, "bare repository")
    project = stack.create_project("settings-site", git_repo.bare, SECRET)
    response = stack.http.patch(
        f"/api/projects/{project['id']}",
        json={
            "build_command": "mkdir -p site && echo from-settings > site/index.html",
            "output_dir": "site",
        },
    )
    assert response.status_code == 200, response.text

    build = build_of(stack, git_repo, sha)
    assert build["state"] == "succeeded", log_of(stack, build["id"])
    assert stack.get_site("settings-site").text.strip() == "from-settings"

    toml = 'build = "mkdir -p site && echo from-toml > site/index.html"\n'
    sha = git_repo.commit({"gobuild.toml": toml}, "the repository says otherwise")
    build = build_of(stack, git_repo, sha)
    assert build["state"] == "succeeded", log_of(stack, build["id"])
    assert stack.get_site("settings-site").text.strip() == "from-toml"


def test_root_dir_builds_the_subfolder_with_its_own_gobuild_toml(
    stack: Stack, git_repo: GitRepo
) -> None:
    sha = git_repo.commit(
        {
            "gobuild.toml": 'build = "exit 9"\n',
            "apps/web/gobuild.toml": (
                "build = 'mkdir -p out && cp page.html out/index.html && pwd > out/where.txt'\n"
                'output = "out"\n'
            ),
            "apps/web/page.html": "<p>the web app</p>",
        },
        "monorepo",
    )
    project = stack.create_project("mono-site", git_repo.bare, SECRET)
    response = stack.http.patch(f"/api/projects/{project['id']}", json={"root_dir": "apps/web"})
    assert response.status_code == 200, response.text

    build = build_of(stack, git_repo, sha)

    log = log_of(stack, build["id"])
    assert build["state"] == "succeeded", log
    assert "folder apps/web" in log
    assert "the web app" in stack.get_site("mono-site").text
    assert stack.get_site("mono-site", "/where.txt").text.strip() == "/workspace/apps/web"


def test_a_failing_test_step_fails_the_build_at_test_and_deploys_nothing(
    stack: Stack, git_repo: GitRepo
) -> None:
    toml = """\
build = "mkdir -p dist && echo built > dist/index.html"
test = "echo running the tests; exit 3"
output = "dist"
"""
    sha = git_repo.commit({"gobuild.toml": toml}, "tests fail")
    project = stack.create_project("tested-site", git_repo.bare, SECRET)

    build = build_of(stack, git_repo, sha)

    log = log_of(stack, build["id"])
    assert build["state"] == "failed", log
    assert build["step"] == "test"
    assert build["reason"] == "step 'test' exited with code 3"
    assert build["deployment_url"] is None
    assert "running the tests" in log
    deployments = stack.http.get(f"/api/projects/{project['id']}/deployments").json()
    assert deployments["deployments"] == []
    assert stack.get_site("tested-site").status_code == 404
