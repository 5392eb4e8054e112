"""The build plan: `gobuild.toml` or detection in the folder that is built (the repository root,
or the project's `root_dir`), merged with the project's resolved `BuildConfig` from the build
request.

Precedence, lowest first: what detection finds (package.json and its lockfile,
requirements.txt, index.html), the request's `BuildConfig` (project settings), then
`gobuild.toml`. The repository's `timeout` may only lower the project's time limit. The
repository is untrusted input: every key is type-checked and an error names the key at fault.
"""

from __future__ import annotations

import json
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gobuild.builder_agent.container import WORKDIR
from gobuild.builder_agent.dependency_cache import CACHE_ROOT
from gobuild.platform.build_settings import (
    InvalidBuildSetting,
    check_image_reference,
    check_relative_folder,
)
from gobuild.platform.events import BuildConfig

CONFIG_FILE = "gobuild.toml"
# Repository files read on the builder host; anything bigger is not a config file.
MAX_CONFIG_BYTES = 256 * 1024
# Folders looked for, in this order, when no output folder is configured.
DETECTED_OUTPUTS = ("dist", "build")

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_STRING_KEYS = ("image", "install", "build", "test", "output", "dockerfile")
# Yarn and pnpm run through corepack (which fetches the package manager the project names, or
# a known-good version); an image without corepack (Debian's node) gets it from the registry.
COREPACK = (
    'command -v corepack >/dev/null || corepack() { npx --yes corepack@0.33.0 "$@"; }; corepack'
)
# Corepack must not write `packageManager` into package.json, nor ask before downloading;
# without `packageManager` it takes its own known-good version, not whatever is newest.
COREPACK_ENV = {
    "COREPACK_ENABLE_AUTO_PIN": "0",
    "COREPACK_ENABLE_DOWNLOAD_PROMPT": "0",
    "COREPACK_DEFAULT_TO_LATEST": "0",
}
# A Python project's dependencies go into this virtualenv in the folder that is built, so the
# build step (another container) finds them; its bin folder comes first on PATH.
PYTHON_VENV = ".venv"
_DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_KNOWN_KEYS = frozenset({*_STRING_KEYS, "env", "timeout", "cache"})
# At most this many folders in `cache = [...]` (the incremental build cache).
MAX_CACHE_FOLDERS = 16
# Folders of the workspace GoBuild itself uses; `cache` may not name them.
_RESERVED_FOLDERS = frozenset({".git", CACHE_ROOT})


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
    # Runs after the build; when it fails the build fails and nothing is deployed.
    test: str | None = None
    output: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    timeout: int | None = None
    # What detection found, for the log (`npm (package-lock.json)`); None for gobuild.toml.
    detected: str | None = None
    # Folders kept from one successful build to the next (`.next/cache`), and the Dockerfile
    # of the build environment (built once per content, the layer cache).
    cache: tuple[str, ...] = ()
    dockerfile: str | None = None


@dataclass(frozen=True)
class BuildPlan:
    """Everything the builder needs to run one build, after all merging."""

    image: str
    steps: tuple[tuple[str, str], ...]
    # None: look for `dist`, then `build`, after the steps ran (in `root_dir`).
    output: str | None
    env: dict[str, str]
    timeout_seconds: int
    memory_mb: int
    cpus: float
    pids_limit: int
    # The folder of the repository that is built ('.': the root): the steps run there.
    root_dir: str = "."
    # The project's secret variables, still encrypted: name -> ciphertext (decrypted right
    # before a step; those gobuild.toml's `env` overrides are left out).
    secret_env: dict[str, str] = field(default_factory=dict)
    # What detection found, for the log.
    detected: str | None = None
    # `gobuild.toml`'s `cache` folders and `dockerfile` (relative to `root_dir`); with a
    # Dockerfile, the steps run in the image built from it instead of `image`.
    cache_folders: tuple[str, ...] = ()
    dockerfile: str | None = None

    @property
    def workdir(self) -> str:
        """Where the steps run in the container."""
        return container_folder(self.root_dir)


def container_folder(root_dir: str) -> str:
    """Where the folder `root_dir` of the repository is in a step's container."""
    return WORKDIR if root_dir == "." else f"{WORKDIR}/{root_dir}"


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
    try:
        return check_relative_folder(value, key)
    except InvalidBuildSetting as exc:
        raise RepoConfigError(str(exc)) from None


def validate_image_reference(value: str) -> str:
    """An image name such as `node:20-bookworm` or `ghcr.io/org/image@sha256:...`."""
    try:
        return check_image_reference(value)
    except InvalidBuildSetting as exc:
        raise RepoConfigError(f"{CONFIG_FILE}: {exc}") from None


def source_folder(workspace: Path, root_dir: str | None) -> Path:
    """The folder of the checked-out repository that is built: `root_dir` (the project's
    monorepo subfolder), which must be a folder inside it even after links are followed."""
    relative = "." if root_dir is None else validate_output_path(root_dir, "root_dir")
    top = workspace.resolve()
    folder = (top / relative).resolve()
    if not folder.is_relative_to(top):
        raise RepoConfigError(f"root_dir '{relative}' leads outside the repository")
    if not folder.is_dir():
        raise RepoConfigError(f"root_dir '{relative}' is not a folder of the repository")
    return folder


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
    if "image" in values:
        values["image"] = validate_image_reference(values["image"])
    for key in ("output", "dockerfile"):
        if key in values:
            try:
                values[key] = validate_output_path(values[key], key)
            except RepoConfigError as exc:
                raise RepoConfigError(f"{CONFIG_FILE}: {exc}") from None
    if "cache" in data:
        values["cache"] = _parse_cache_folders(data["cache"])
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


def _parse_cache_folders(value: object) -> tuple[str, ...]:
    """`cache = [".next/cache", "node_modules/.vite"]`: folders inside the folder built."""
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise RepoConfigError(f"{CONFIG_FILE}: 'cache' must be a list of folders (strings)")
    if len(value) > MAX_CACHE_FOLDERS:
        raise RepoConfigError(f"{CONFIG_FILE}: 'cache' may name at most {MAX_CACHE_FOLDERS}")
    folders: list[str] = []
    for item in value:
        try:
            folder = validate_output_path(item, "cache")
        except RepoConfigError as exc:
            raise RepoConfigError(f"{CONFIG_FILE}: {exc}") from None
        if folder == "." or folder.split("/")[0] in _RESERVED_FOLDERS:
            raise RepoConfigError(
                f"{CONFIG_FILE}: 'cache' may not name {item!r} (a folder inside the project, "
                "not its root, .git or .gobuild-cache)"
            )
        if folder not in folders:
            folders.append(folder)
    return tuple(folders)


def read_config_file(root: Path) -> RepoConfig | None:
    """Parse `gobuild.toml` in the folder that is built; None if there is none."""
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


def _detect_node(root: Path, package_json: Path) -> RepoConfig:
    """npm, yarn or pnpm, by the lockfile there is (npm without one)."""
    try:
        package = json.loads(_read_small_file(package_json))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RepoConfigError(f"package.json is not valid JSON: {exc}") from None
    if not isinstance(package, dict):
        raise RepoConfigError("package.json must contain a JSON object")
    scripts = package.get("scripts")
    has_build = isinstance(scripts, dict) and isinstance(scripts.get("build"), str)
    if (root / "package-lock.json").is_file():
        install, run, detected, env = "npm ci", "npm run", "npm (package-lock.json)", {}
    elif (root / "pnpm-lock.yaml").is_file():
        install = f"{COREPACK} pnpm install --frozen-lockfile"
        run, detected, env = f"{COREPACK} pnpm run", "pnpm (pnpm-lock.yaml)", COREPACK_ENV
    elif (root / "yarn.lock").is_file():
        install = f"{COREPACK} yarn install --frozen-lockfile"
        run, detected, env = f"{COREPACK} yarn run", "yarn (yarn.lock)", COREPACK_ENV
    else:
        install, run, detected, env = "npm install", "npm run", "npm (no lockfile)", {}
    return RepoConfig(
        install=install,
        build=f"{run} build" if has_build else None,
        env=dict(env),
        detected=detected,
    )


def _detect_python(workdir: str) -> RepoConfig:
    """requirements.txt: installed into a virtualenv the build command then runs with."""
    venv = f"{workdir}/{PYTHON_VENV}"
    return RepoConfig(
        install=f"python3 -m venv {PYTHON_VENV} && {PYTHON_VENV}/bin/pip install -r "
        "requirements.txt",
        env={"VIRTUAL_ENV": venv, "PATH": f"{venv}/bin:{_DEFAULT_PATH}"},
        detected="Python (requirements.txt)",
    )


def detect_config(root: Path, workdir: str = WORKDIR) -> RepoConfig | None:
    """What the files in `root` (at `workdir` in the container) imply: a Node project (npm,
    yarn, pnpm), a Python project or a static site; None if none of them."""
    package_json = root / "package.json"
    if package_json.exists() or package_json.is_symlink():
        return _detect_node(root, package_json)
    if (root / "requirements.txt").is_file():
        return _detect_python(workdir)
    if (root / "index.html").is_file():
        return RepoConfig(output=".", detected="static site (index.html)")
    return None


def _pick(*values: str | None) -> str | None:
    """The last value that was said (not None)."""
    chosen = None
    for value in values:
        if value is not None:
            chosen = value
    return chosen


def merge_plan(
    requested: BuildConfig,
    detected: RepoConfig | None,
    repo: RepoConfig | None,
    *,
    root_dir: str = ".",
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
        for name, command in (("install", install), ("build", build), ("test", repo.test))
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
        root_dir=root_dir,
        secret_env={
            name: value for name, value in requested.secret_env.items() if name not in repo.env
        },
        detected=detected.detected,
        cache_folders=repo.cache,
        dockerfile=repo.dockerfile,
    )


def resolve_plan(root: Path, requested: BuildConfig) -> BuildPlan:
    """The effective plan for the checked-out repository at `root` (blocking file reads), built
    in its `root_dir` when the project names one."""
    folder = source_folder(root, requested.root_dir)
    root_dir = folder.relative_to(root.resolve()).as_posix()
    repo = read_config_file(folder)
    detected = detect_config(folder, container_folder(root_dir))
    said_by_project = any(
        value is not None for value in (requested.install, requested.build, requested.output)
    )
    if repo is None and detected is None and not said_by_project:
        where = "the repository root" if root_dir == "." else f"root_dir '{root_dir}'"
        raise RepoConfigError(
            f"no gobuild.toml, package.json, requirements.txt or index.html in {where}"
        )
    return merge_plan(requested, detected, repo, root_dir=root_dir)
