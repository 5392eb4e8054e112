"""The build plan: gobuild.toml parsing, detection from the repository's files, and merging."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gobuild.builder_agent.repo_config import RepoConfigError, resolve_plan
from gobuild.platform.events import BuildConfig


def project_config(**overrides: object) -> BuildConfig:
    values: dict[str, object] = {
        "image": "gobuild/build-base:bookworm",
        "timeout_seconds": 600,
        "memory_mb": 1024,
        "cpus": 1.0,
        "pids_limit": 256,
    }
    values.update(overrides)
    return BuildConfig(**values)  # type: ignore[arg-type]


def write(root: Path, files: dict[str, str]) -> Path:
    for name, content in files.items():
        (root / name).write_text(content)
    return root


def test_gobuild_toml_sets_image_steps_output_env_and_lowers_the_timeout(tmp_path: Path) -> None:
    write(
        tmp_path,
        {
            "gobuild.toml": """
image = "node:20"
install = "make deps"
build = "make site"
output = "./public/"
timeout = 120
[env]
NODE_ENV = "production"
""",
        },
    )

    plan = resolve_plan(tmp_path, project_config(env={"API": "x", "NODE_ENV": "dev"}))

    assert plan.image == "node:20"
    assert plan.steps == (("install", "make deps"), ("build", "make site"))
    assert plan.output == "public"
    assert plan.env == {"API": "x", "NODE_ENV": "production"}
    assert plan.timeout_seconds == 120
    assert (plan.memory_mb, plan.cpus, plan.pids_limit) == (1024, 1.0, 256)


def test_repository_timeout_cannot_raise_the_project_limit(tmp_path: Path) -> None:
    write(tmp_path, {"gobuild.toml": 'build = "make"\ntimeout = 5000\n'})

    assert resolve_plan(tmp_path, project_config(timeout_seconds=300)).timeout_seconds == 300


@pytest.mark.parametrize(
    ("toml", "named"),
    [
        ('buld = "npm run build"', "'buld'"),
        ("build = 3", "'build'"),
        ('output = "/etc"', "'output'"),
        ('output = "../secrets"', "'output'"),
        ('output = "dist/../../x"', "'output'"),
        ('env = "A=1"', "'env'"),
        ("env = { A = 1 }", "'env.A'"),
        ('env = { "1BAD" = "x" }', "'env'"),
        ('timeout = "60"', "'timeout'"),
        ("timeout = true", "'timeout'"),
        ("timeout = 0", "'timeout'"),
        ('image = ""', "'image'"),
    ],
)
def test_invalid_gobuild_toml_is_rejected_naming_the_key(
    tmp_path: Path, toml: str, named: str
) -> None:
    write(tmp_path, {"gobuild.toml": toml})

    with pytest.raises(RepoConfigError) as error:
        resolve_plan(tmp_path, project_config())

    assert named in str(error.value)


def test_gobuild_toml_that_is_not_toml_is_rejected(tmp_path: Path) -> None:
    write(tmp_path, {"gobuild.toml": "build = \n"})

    with pytest.raises(RepoConfigError, match=r"gobuild\.toml is not valid TOML"):
        resolve_plan(tmp_path, project_config())


def test_gobuild_toml_that_links_elsewhere_is_not_read(tmp_path: Path) -> None:
    (tmp_path / "gobuild.toml").symlink_to("/etc/passwd")

    with pytest.raises(RepoConfigError, match="regular file"):
        resolve_plan(tmp_path, project_config())


def test_npm_project_with_lock_file_uses_npm_ci_and_its_build_script(tmp_path: Path) -> None:
    write(
        tmp_path,
        {
            "package.json": json.dumps({"scripts": {"build": "vite build"}}),
            "package-lock.json": "{}",
        },
    )

    plan = resolve_plan(tmp_path, project_config())

    assert plan.steps == (("install", "npm ci"), ("build", "npm run build"))
    assert plan.output is None  # dist or build, looked for after the build


def test_npm_project_without_lock_or_build_script_only_installs(tmp_path: Path) -> None:
    write(tmp_path, {"package.json": json.dumps({"name": "site"})})

    plan = resolve_plan(tmp_path, project_config())

    assert plan.steps == (("install", "npm install"),)


def test_broken_package_json_is_reported(tmp_path: Path) -> None:
    write(tmp_path, {"package.json": "{ not json"})

    with pytest.raises(RepoConfigError, match=r"package\.json is not valid JSON"):
        resolve_plan(tmp_path, project_config())


def test_static_site_with_index_html_has_no_steps_and_serves_the_root(tmp_path: Path) -> None:
    write(tmp_path, {"index.html": "<h1>hi</h1>"})

    plan = resolve_plan(tmp_path, project_config())

    assert plan.steps == ()
    assert plan.output == "."


def test_repository_with_nothing_to_build_is_rejected(tmp_path: Path) -> None:
    write(tmp_path, {"README.md": "hello"})

    with pytest.raises(RepoConfigError) as error:
        resolve_plan(tmp_path, project_config())

    assert str(error.value) == "no gobuild.toml, package.json or index.html at the repository root"


def test_project_settings_override_detection_and_gobuild_toml_overrides_both(
    tmp_path: Path,
) -> None:
    write(
        tmp_path,
        {
            "package.json": json.dumps({"scripts": {"build": "x"}}),
            "gobuild.toml": 'output = "out"\ninstall = ""\n',
        },
    )

    plan = resolve_plan(tmp_path, project_config(build="npm run build:prod", output="public"))

    # install = "" in gobuild.toml switches the detected install step off.
    assert plan.steps == (("build", "npm run build:prod"),)
    assert plan.output == "out"


def test_project_settings_alone_are_enough_to_build(tmp_path: Path) -> None:
    write(tmp_path, {"Makefile": "all:\n"})

    plan = resolve_plan(tmp_path, project_config(build="make", output="site"))

    assert plan.steps == (("build", "make"),)
    assert plan.output == "site"
