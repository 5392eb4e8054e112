"""Detection end to end, through `gobuild dev`, real Docker and the real registries: a yarn.lock
project and a pnpm-lock.yaml project install through corepack (which downloads yarn or pnpm
from the npm registry inside the build), a requirements.txt project installs into a virtualenv
its build command runs with; the detected plan is printed at the top of each log."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.conftest import GitRepo
from tests.e2e.stack import Stack

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

SECRET = "detection-webhook-secret-0123456789"
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def fixture_files(name: str) -> dict[str, str]:
    folder = FIXTURES / name
    return {path.name: path.read_text() for path in sorted(folder.iterdir()) if path.is_file()}


def build_fixture(stack: Stack, repo: GitRepo, name: str) -> tuple[dict[str, Any], str]:
    """Build tests/fixtures/`name` as a new project's production branch: the build, its log."""
    sha = repo.commit(fixture_files(name), message=name)
    stack.create_project(name, repo.bare, SECRET)
    response = stack.push_webhook(repo.bare, sha, SECRET)
    assert response.status_code == 202, response.text
    build = stack.wait_for_build(response.json()["build_id"], timeout=420)
    log = stack.http.get(f"/api/builds/{build['id']}/logs").text
    assert build["state"] == "succeeded", log
    return build, log


def plan_lines(log: str) -> list[str]:
    """The log's lines before the first command ran: where the plan is printed."""
    lines = log.splitlines()
    first_command = next(i for i, line in enumerate(lines) if "$ " in line)
    return lines[:first_command]


def saved_dependency_cache(build: dict[str, Any], log: str) -> dict[str, Any]:
    [use] = [use for use in build["caches"] if use["kind"] == "dependencies"]
    assert use["result"] == "miss" and use["save_seconds"] is not None, log
    return use


@pytest.mark.parametrize(
    ("fixture", "detected", "install"),
    [
        ("yarn-site", "Detected yarn (yarn.lock)", "yarn install --frozen-lockfile"),
        ("pnpm-site", "Detected pnpm (pnpm-lock.yaml)", "pnpm install --frozen-lockfile"),
    ],
)
def test_a_yarn_or_pnpm_project_installs_through_corepack_and_deploys(
    stack: Stack, git_repo: GitRepo, fixture: str, detected: str, install: str
) -> None:
    build, log = build_fixture(stack, git_repo, fixture)

    plan = "\n".join(plan_lines(log))
    assert detected in plan, log
    assert install in plan and "run build" in plan, log
    manager = fixture.removesuffix("-site")
    assert f"{manager}: 3 is odd: true" in stack.get_site(fixture).text
    # The package manager's downloads (and corepack's) are what the dependency cache keeps.
    assert saved_dependency_cache(build, log)["size_bytes"] > 0


def test_a_requirements_txt_project_installs_into_a_virtualenv_its_build_command_uses(
    stack: Stack, git_repo: GitRepo
) -> None:
    _, log = build_fixture(stack, git_repo, "python-site")

    plan = "\n".join(plan_lines(log))
    assert "Detected Python (requirements.txt)" in plan, log
    assert "pip install -r requirements.txt" in plan and "build: python build.py" in plan, log
    page = stack.get_site("python-site").text
    assert "<h1>A Python site</h1>" in page and "<em>Markdown</em>" in page, page
    # Not asserted: pip's download cache saved. pip keeps only responses HTTP says it may
    # (PyPI's `Cache-Control: max-age=...`), and a TLS-inspecting proxy that drops those
    # headers leaves it empty ("Dependency cache: nothing to save").
