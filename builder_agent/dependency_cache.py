"""The dependency cache of a build: the package managers' download caches (not
`node_modules`), kept in a folder of the workspace that the steps point every package manager
at, and keyed by the build image and the lockfiles' content.

Packing never includes the folder in the build's output (`artifacts.pack_output` skips it).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from gobuild.builder_agent.container import WORKDIR

# In the workspace (the repository root), whatever folder is built.
CACHE_ROOT = ".gobuild-cache"
DEPENDENCIES_FOLDER = "deps"
DEPENDENCIES_IN_CONTAINER = f"{WORKDIR}/{CACHE_ROOT}/{DEPENDENCIES_FOLDER}"
# Lockfiles, looked for in the folder that is built; each one found is part of the key.
LOCKFILES = ("package-lock.json", "npm-shrinkwrap.json", "yarn.lock", "pnpm-lock.yaml")
LOCKFILE_PATTERNS = ("requirements*.txt", "poetry.lock", "uv.lock", "Pipfile.lock")
# Where each package manager keeps its downloads, all under the cache folder.
DEPENDENCY_CACHE_ENV = {
    "npm_config_cache": f"{DEPENDENCIES_IN_CONTAINER}/npm",
    "YARN_CACHE_FOLDER": f"{DEPENDENCIES_IN_CONTAINER}/yarn",
    # Yarn 2+ (berry) reads its own variable and keeps the cache outside the project.
    "YARN_GLOBAL_FOLDER": f"{DEPENDENCIES_IN_CONTAINER}/yarn-berry",
    "YARN_ENABLE_GLOBAL_CACHE": "true",
    "npm_config_store_dir": f"{DEPENDENCIES_IN_CONTAINER}/pnpm-store",
    "COREPACK_HOME": f"{DEPENDENCIES_IN_CONTAINER}/corepack",
    "PIP_CACHE_DIR": f"{DEPENDENCIES_IN_CONTAINER}/pip",
    "UV_CACHE_DIR": f"{DEPENDENCIES_IN_CONTAINER}/uv",
    "POETRY_CACHE_DIR": f"{DEPENDENCIES_IN_CONTAINER}/poetry",
}
# With a restored cache, npm takes what the cache has without asking the registry first.
RESTORED_ENV = {"npm_config_prefer_offline": "true"}
# Lockfiles larger than this are hashed all the same; this only bounds what is read at once.
_READ_BYTES = 1024 * 1024


@dataclass(frozen=True)
class DependencyKey:
    """What identifies one dependency cache: the lockfiles (by name) and their digest."""

    lockfiles: tuple[str, ...]
    digest: str

    def key(self, scope: str) -> str:
        """The cache's key in the project, in `scope` (see `cache_scope`)."""
        return f"{scope}-{self.digest[:40]}"


def cache_scope(production: bool, branch: str | None) -> str:
    """Which builds share a cache: production builds share theirs, every other branch has its
    own, so a preview branch's build never fills the cache production builds restore."""
    if production:
        return "production"
    return "branch-" + hashlib.sha256((branch or "").encode()).hexdigest()[:12]


def find_lockfiles(folder: Path) -> list[Path]:
    """The lockfiles in `folder` (regular files, not links), in a fixed order."""
    found = [folder / name for name in LOCKFILES]
    for pattern in LOCKFILE_PATTERNS:
        found.extend(sorted(folder.glob(pattern)))
    return [path for path in found if path.is_file() and not path.is_symlink()]


def dependency_key(folder: Path, image: str) -> DependencyKey | None:
    """The key of the folder's lockfiles with `image` (blocking); None without a lockfile."""
    lockfiles = find_lockfiles(folder)
    if not lockfiles:
        return None
    hasher = hashlib.sha256(f"image {image}\n".encode())
    for path in lockfiles:
        hasher.update(f"file {path.name}\n".encode())
        with path.open("rb") as handle:
            while chunk := handle.read(_READ_BYTES):
                hasher.update(chunk)
        hasher.update(b"\n")
    return DependencyKey(tuple(path.name for path in lockfiles), hasher.hexdigest())
