"""The build plan: gobuild.toml parsing, detection from the repository's files, and merging."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gobuild.builder_agent.repo_config import COREPACK, RepoConfigError, resolve_plan
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
        ('image = "--privileged"', "'image'"),
        ('image = "Node:20 bookworm"', "'image'"),
        # An image id names whatever local image has it, another tenant's too.
        (f'image = "sha256:{"a" * 64}"', "'image'"),
        ('image = "4a5b6c7d8e9f"', "'image'"),
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

    assert str(error.value) == (
        "no gobuild.toml, package.json, requirements.txt or index.html in the repository root"
    )


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


def test_test_command_runs_after_the_build(tmp_path: Path) -> None:
    write(tmp_path, {"gobuild.toml": 'build = "make"\ntest = "npm test"\noutput = "site"\n'})

    plan = resolve_plan(tmp_path, project_config())

    assert plan.steps == (("build", "make"), ("test", "npm test"))


@pytest.mark.parametrize(
    ("lockfile", "manager"),
    [("yarn.lock", "yarn"), ("pnpm-lock.yaml", "pnpm")],
)
def test_yarn_and_pnpm_lockfiles_install_frozen_through_corepack(
    tmp_path: Path, lockfile: str, manager: str
) -> None:
    write(
        tmp_path,
        {"package.json": json.dumps({"scripts": {"build": "vite build"}}), lockfile: ""},
    )

    plan = resolve_plan(tmp_path, project_config())

    assert plan.steps == (
        ("install", f"{COREPACK} {manager} install --frozen-lockfile"),
        ("build", f"{COREPACK} {manager} run build"),
    )
    assert plan.env["COREPACK_ENABLE_AUTO_PIN"] == "0"
    assert plan.detected == f"{manager} ({lockfile})"


def test_python_project_installs_requirements_into_a_venv_the_build_command_uses(
    tmp_path: Path,
) -> None:
    write(tmp_path, {"requirements.txt": "markdown==3.6\n"})

    plan = resolve_plan(tmp_path, project_config(build="python build.py", output="site"))

    assert plan.steps == (
        ("install", "python3 -m venv .venv && .venv/bin/pip install -r requirements.txt"),
        ("build", "python build.py"),
    )
    assert plan.env["PATH"].startswith("/workspace/.venv/bin:")
    assert plan.detected == "Python (requirements.txt)"


def test_root_dir_reads_gobuild_toml_and_detects_in_the_subfolder(tmp_path: Path) -> None:
    (tmp_path / "apps" / "web").mkdir(parents=True)
    write(tmp_path, {"gobuild.toml": 'build = "wrong"\n'})
    write(tmp_path / "apps" / "web", {"requirements.txt": "", "gobuild.toml": 'build = "make"\n'})

    plan = resolve_plan(tmp_path, project_config(root_dir="./apps/web/"))

    assert plan.root_dir == "apps/web"
    assert plan.workdir == "/workspace/apps/web"
    assert plan.steps[-1] == ("build", "make")
    assert plan.env["PATH"].startswith("/workspace/apps/web/.venv/bin:")


@pytest.mark.parametrize("root_dir", ["../elsewhere", "/etc", "apps/../../x", "missing", "link"])
def test_root_dir_outside_the_repository_or_missing_is_refused(
    tmp_path: Path, root_dir: str
) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "link").symlink_to(tmp_path)
    write(repo, {"index.html": "hi"})

    with pytest.raises(RepoConfigError, match="root_dir"):
        resolve_plan(repo, project_config(root_dir=root_dir))


def test_secret_variables_stay_encrypted_and_gobuild_toml_env_overrides_them(
    tmp_path: Path,
) -> None:
    write(tmp_path, {"gobuild.toml": 'build = "make"\n[env]\nTOKEN = "from-repo"\n'})

    plan = resolve_plan(
        tmp_path, project_config(secret_env={"TOKEN": "cipher-1", "API_KEY": "cipher-2"})
    )

    assert plan.secret_env == {"API_KEY": "cipher-2"}
    assert plan.env == {"TOKEN": "from-repo"}
