"""The build plan: `gobuild.toml` or detection at the repository root, merged with the project's
resolved `BuildConfig` from the build request.

Precedence, lowest first: what detection finds (package.json, index.html), the request's
`BuildConfig` (project settings), then `gobuild.toml`. The repository's `timeout` may only lower
the project's time limit. The repository is untrusted input: every key is type-checked and an
error names the key at fault.
"""

from __future__ import annotations

import json
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from gobuild.platform.events import BuildConfig

CONFIG_FILE = "gobuild.toml"
# Repository files read on the builder host; anything bigger is not a config file.
MAX_CONFIG_BYTES = 256 * 1024
# Folders looked for, in this order, when no output folder is configured.
DETECTED_OUTPUTS = ("dist", "build")

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_STRING_KEYS = ("image", "install", "build", "output")
_KNOWN_KEYS = frozenset({*_STRING_KEYS, "env", "timeout"})


class RepoConfigError(ValueError):
    """The repository's build configuration is invalid or nothing buildable was found."""


@dataclass(frozen=True)
class RepoConfig:
    """What the repository says about its build; None means 'not said'.

    An empty `install` or `build` string switches that step off.
    """

    image: str | None = None
    install: str | None = None
    build: str | None = None
    output: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    timeout: int | None = None


@dataclass(frozen=True)
class BuildPlan:
    """Everything the builder needs to run one build, after all merging."""

    image: str
    steps: tuple[tuple[str, str], ...]
    # None: look for `dist`, then `build`, after the steps ran.
    output: str | None
    env: dict[str, str]
    timeout_seconds: int
    memory_mb: int
    cpus: float
    pids_limit: int


def _read_small_file(path: Path) -> bytes:
    if path.is_symlink() or not path.is_file():
        raise RepoConfigError(f"{path.name} must be a regular file, not a link or a folder")
    with path.open("rb") as handle:
        data = handle.read(MAX_CONFIG_BYTES + 1)
    if len(data) > MAX_CONFIG_BYTES:
        raise RepoConfigError(f"{path.name} is larger than {MAX_CONFIG_BYTES // 1024} KiB")
    return data


def validate_output_path(value: str, key: str = "output") -> str:
    """A relative folder inside the repository, normalized (`./dist/` -> `dist`)."""
    if not value.strip():
        raise RepoConfigError(f"'{key}' must not be empty (use '.' for the repository root)")
    if "\x00" in value or "\\" in value:
        raise RepoConfigError(f"'{key}' contains a NUL byte or a backslash")
    path = PurePosixPath(value)
    if path.is_absolute():
        raise RepoConfigError(f"'{key}' must be a relative path, not {value!r}")
    if ".." in path.parts:
        raise RepoConfigError(f"'{key}' must not contain '..'")
    return str(path)


def parse_repo_config(data: dict[str, Any]) -> RepoConfig:
    """Type-check the keys of a parsed `gobuild.toml`."""
    unknown = sorted(set(data) - _KNOWN_KEYS)
    if unknown:
        allowed = ", ".join(sorted(_KNOWN_KEYS))
        raise RepoConfigError(
            f"{CONFIG_FILE}: unknown key '{unknown[0]}' (allowed keys: {allowed})"
        )
    values: dict[str, Any] = {}
    for key in _STRING_KEYS:
        if key not in data:
            continue
        value = data[key]
        if not isinstance(value, str):
            raise RepoConfigError(f"{CONFIG_FILE}: '{key}' must be a string")
        if "\x00" in value:
            raise RepoConfigError(f"{CONFIG_FILE}: '{key}' contains a NUL byte")
        values[key] = value
    if "image" in values and not values["image"].strip():
        raise RepoConfigError(f"{CONFIG_FILE}: 'image' must not be empty")
    if "output" in values:
        try:
            values["output"] = validate_output_path(values["output"])
        except RepoConfigError as exc:
            raise RepoConfigError(f"{CONFIG_FILE}: {exc}") from None
    if "env" in data:
        env = data["env"]
        if not isinstance(env, dict):
            raise RepoConfigError(f"{CONFIG_FILE}: 'env' must be a table of strings")
        for name, value in env.items():
            if not _ENV_NAME.match(name):
                raise RepoConfigError(f"{CONFIG_FILE}: 'env' has an invalid variable name {name!r}")
            if not isinstance(value, str):
                raise RepoConfigError(f"{CONFIG_FILE}: 'env.{name}' must be a string")
            if "\x00" in value:
                raise RepoConfigError(f"{CONFIG_FILE}: 'env.{name}' contains a NUL byte")
        values["env"] = dict(env)
    if "timeout" in data:
        timeout = data["timeout"]
        # bool is an int in Python; `timeout = true` is a mistake, not one second.
        if isinstance(timeout, bool) or not isinstance(timeout, int):
            raise RepoConfigError(f"{CONFIG_FILE}: 'timeout' must be an integer (seconds)")
        if timeout < 1:
            raise RepoConfigError(f"{CONFIG_FILE}: 'timeout' must be at least 1 second")
        values["timeout"] = timeout
    return RepoConfig(**values)


def read_config_file(root: Path) -> RepoConfig | None:
    """Parse `gobuild.toml` at the repository root; None if there is none."""
    path = root / CONFIG_FILE
    if not path.exists() and not path.is_symlink():
        return None
    raw = _read_small_file(path)
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise RepoConfigError(f"{CONFIG_FILE} is not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise RepoConfigError(f"{CONFIG_FILE} is not valid TOML: {exc}") from None
    return parse_repo_config(data)


def detect_config(root: Path) -> RepoConfig | None:
    """What the repository's files imply: an npm project or a static site; None if neither."""
    package_json = root / "package.json"
    if package_json.exists() or package_json.is_symlink():
        try:
            package = json.loads(_read_small_file(package_json))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise RepoConfigError(f"package.json is not valid JSON: {exc}") from None
        if not isinstance(package, dict):
            raise RepoConfigError("package.json must contain a JSON object")
        scripts = package.get("scripts")
        has_build = isinstance(scripts, dict) and isinstance(scripts.get("build"), str)
        install = "npm ci" if (root / "package-lock.json").is_file() else "npm install"
        return RepoConfig(install=install, build="npm run build" if has_build else None)
    if (root / "index.html").is_file():
        return RepoConfig(output=".")
    return None


def _pick(*values: str | None) -> str | None:
    """The last value that was said (not None)."""
    chosen = None
    for value in values:
        if value is not None:
            chosen = value
    return chosen


def merge_plan(
    requested: BuildConfig, detected: RepoConfig | None, repo: RepoConfig | None
) -> BuildPlan:
    """Combine detection < request < `gobuild.toml` into one plan."""
    detected = detected or RepoConfig()
    repo = repo or RepoConfig()
    requested_output = (
        validate_output_path(requested.output) if requested.output is not None else None
    )
    install = _pick(detected.install, requested.install, repo.install)
    build = _pick(detected.build, requested.build, repo.build)
    steps = tuple(
        (name, command)
        for name, command in (("install", install), ("build", build))
        if command and command.strip()
    )
    timeout = requested.timeout_seconds
    if repo.timeout is not None:
        timeout = min(timeout, repo.timeout)
    return BuildPlan(
        image=_pick(requested.image, repo.image) or requested.image,
        steps=steps,
        output=_pick(detected.output, requested_output, repo.output),
        env={**detected.env, **requested.env, **repo.env},
        timeout_seconds=timeout,
        memory_mb=requested.memory_mb,
        cpus=requested.cpus,
        pids_limit=requested.pids_limit,
    )


def resolve_plan(root: Path, requested: BuildConfig) -> BuildPlan:
    """The effective plan for the checked-out repository at `root` (blocking file reads)."""
    repo = read_config_file(root)
    detected = detect_config(root)
    said_by_project = any(
        value is not None for value in (requested.install, requested.build, requested.output)
    )
    if repo is None and detected is None and not said_by_project:
        raise RepoConfigError("no gobuild.toml, package.json or index.html at the repository root")
    return merge_plan(requested, detected, repo)
