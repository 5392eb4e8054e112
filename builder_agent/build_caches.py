"""A build's caches: restored before its steps, saved after it succeeded, each use recorded on
the build (`run.caches`) and printed in its log (hit, partial or miss; key; size; times).

- Dependencies: the package managers' download folder (`dependency_cache`), keyed by image and
  lockfiles; restored before install, falling back to the newest of the same image (partial);
  saved only under a new key.
- Incremental: the folders `gobuild.toml` names in `cache = [...]`, from the newest successful
  build of the branch, else of production (partial); restored after install (which may empty
  `node_modules`), saved after every successful build, replacing the branch's older one.

A build of a production branch only restores what production builds saved; any other branch
also restores its own. Storage keeps the archives, so builders on every host share them; the
cache index (Redis) says which exist. A save holds a lease, so of two builds saving one cache
at once one saves and the other skips. A cache that cannot be restored or saved never fails the
build: the log says so and the build goes on without it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import docker
from redis.exceptions import RedisError

from gobuild.builder_agent.build_run import BuildRun
from gobuild.builder_agent.ca_trust import NO_EXTRA_TRUST, BuildCaTrust
from gobuild.builder_agent.cache_archive import (
    CacheArchiveError,
    pack_folders,
    size_text,
    unpack_folders,
)
from gobuild.builder_agent.container import hand_workspace_to
from gobuild.builder_agent.dependency_cache import (
    CACHE_ROOT,
    DEPENDENCIES_FOLDER,
    DEPENDENCY_CACHE_ENV,
    RESTORED_ENV,
    DependencyKey,
    cache_scope,
    dependency_key,
)
from gobuild.builder_agent.layer_cache import LayerCache
from gobuild.platform.cache_records import STORED_CACHE_KINDS, CacheEntry, StoredCacheKind
from gobuild.platform.config import Settings
from gobuild.platform.events import CacheResult, CacheUse
from gobuild.platform.storage_client import StorageClient, StorageError
from gobuild.platform.stores.caches import CacheIndex

log = logging.getLogger(__name__)

# A build saving a cache holds it this long at most (a builder that died lets go of it so).
SAVE_LEASE_SECONDS = 15 * 60
_TITLES = {"dependencies": "Dependency cache", "incremental": "Incremental cache"}
# What may go wrong with a cache without failing the build.
_CACHE_FAILURES = (StorageError, CacheArchiveError, RedisError, OSError)


class BuildCaches:
    """The caches of every build on this builder: storage, the index and the layer cache."""

    def __init__(
        self,
        settings: Settings,
        storage: StorageClient,
        index: CacheIndex,
        docker_client: docker.DockerClient,
        ca_trust: BuildCaTrust = NO_EXTRA_TRUST,
    ) -> None:
        self.settings = settings
        self.storage = storage
        self.index = index
        self.layers = LayerCache(settings, docker_client, index, ca_trust)

    def for_run(
        self, run: BuildRun, root_dir: str, image: str, folders: tuple[str, ...]
    ) -> RunCaches:
        """The caches of one build attempt, whose folder that is built is `root_dir` of the
        workspace, whose steps run in `image` and which caches `folders` (relative to
        `root_dir`)."""
        return RunCaches(self, run, root_dir, image, folders)

    async def restore(
        self, run: BuildRun, entry: CacheEntry, root: Path, folders: tuple[str, ...]
    ) -> bool:
        """Download and unpack `entry`; False when storage no longer has it."""
        owner = self
        archive = run.archive.with_name(f"{run.archive.name}.{entry.kind}.restore.tar.gz")
        try:
            size = await owner.storage.download_cache(
                entry.project_id,
                entry.kind,
                entry.key,
                archive,
                expected_sha256=entry.sha256,
            )
            if size is None:
                await owner.index.remove(entry)
                return False
            await asyncio.to_thread(root.mkdir, parents=True, exist_ok=True)
            await asyncio.to_thread(unpack_folders, archive, root, folders)
        finally:
            await asyncio.to_thread(archive.unlink, missing_ok=True)
        await owner.index.touch(entry)
        return True

    async def drop_older_incremental(self, saved: CacheEntry) -> None:
        """A branch keeps only its newest incremental cache."""
        for entry in await self.index.entries(saved.project_id, "incremental"):
            same_branch = entry.branch == saved.branch and entry.production == saved.production
            if same_branch and entry.key != saved.key:
                await self.remove(entry)

    async def prune(self, keep: CacheEntry) -> None:
        """Remove the least recently used caches of the project beyond its limit."""
        entries = [
            entry
            for entry in await self.index.entries(keep.project_id)
            if entry.kind in STORED_CACHE_KINDS
        ]
        total = sum(entry.size_bytes for entry in entries)
        for entry in sorted(entries, key=lambda e: e.last_used_at):
            if total <= self.settings.cache_max_bytes:
                break
            if entry.field == keep.field:
                continue
            await self.remove(entry)
            total -= entry.size_bytes

    async def remove(self, entry: CacheEntry) -> None:
        await self.index.remove(entry)
        await self.storage.delete_cache(entry.project_id, entry.kind, entry.key)


@dataclass
class _Pending:
    """A cache to save after the build succeeded."""

    kind: StoredCacheKind
    key: str
    # Relative to the workspace, which the builder made: each is checked from there.
    folders: tuple[str, ...]
    use: CacheUse


@dataclass
class RunCaches:
    """The caches of one build attempt."""

    owner: BuildCaches
    run: BuildRun
    # The folder that is built, relative to the workspace ('.': the repository root).
    root_dir: str
    image: str
    folders: tuple[str, ...]
    env: dict[str, str] = field(default_factory=lambda: dict(DEPENDENCY_CACHE_ENV))
    _pending: list[_Pending] = field(default_factory=list)
    _build_folders_restored: bool = False

    @property
    def source(self) -> Path:
        """The folder that is built (its lockfiles are read before any step ran)."""
        return self.run.workspace / self.root_dir

    @property
    def _in_workspace(self) -> tuple[str, ...]:
        """The cached folders, relative to the workspace."""
        if self.root_dir == ".":
            return self.folders
        return tuple(f"{self.root_dir}/{folder}" for folder in self.folders)

    @property
    def scope(self) -> str:
        request = self.run.request
        return cache_scope(request.production, request.branch)

    def _allowed(self, entry: CacheEntry) -> bool:
        """What this build may restore: production's caches, and its own branch's."""
        request = self.run.request
        if entry.production:
            return True
        return not request.production and entry.branch == request.branch

    # Dependencies ------------------------------------------------------------------------

    async def restore_dependencies(self) -> None:
        """Before install: the download cache of the lockfiles, else the newest of the image."""
        run = self.run
        try:
            found = await asyncio.to_thread(dependency_key, self.source, self.image)
        except OSError as exc:
            await run.logs.system(f"Dependency cache: not used ({exc})")
            return
        if found is None:
            await run.logs.system("Dependency cache: not used (no lockfile)")
            return
        key = found.key(self.scope)
        folders = (f"{CACHE_ROOT}/{DEPENDENCIES_FOLDER}",)
        use = CacheUse(kind="dependencies", key=key, result="miss")
        started = time.monotonic()
        try:
            entry, result = await self._find_dependencies(found, key)
            restored = entry is not None and await self.owner.restore(
                self.run, entry, run.workspace, folders
            )
        except _CACHE_FAILURES as exc:
            await run.logs.system(f"Dependency cache: not restored ({exc}); installing without")
            entry, restored = None, False
        lockfiles = ", ".join(found.lockfiles)
        if restored and entry is not None:
            use.result = result
            use.size_bytes = entry.size_bytes
            use.restore_seconds = round(time.monotonic() - started, 3)
            self.env.update(RESTORED_ENV)
            older = "" if result == "hit" else f" from {entry.key} (another lockfile)"
            await run.logs.system(
                f"Dependency cache: {result}, key {key} ({lockfiles}), "
                f"{size_text(entry.size_bytes)} restored{older} in {use.restore_seconds:.1f}s"
            )
        else:
            await run.logs.system(f"Dependency cache: miss, key {key} ({lockfiles})")
        run.caches.append(use)
        if use.result != "hit":
            self._pending.append(_Pending("dependencies", key, folders, use))

    async def _find_dependencies(
        self, found: DependencyKey, key: str
    ) -> tuple[CacheEntry | None, CacheResult]:
        index, project_id = self.owner.index, self.run.request.project_id
        exact = [key]
        if not self.run.request.production:
            exact.append(found.key(cache_scope(True, None)))
        for candidate in exact:
            entry = await index.get(project_id, "dependencies", candidate)
            if entry is not None and self._allowed(entry):
                return entry, "hit"
        for entry in await index.entries(project_id, "dependencies"):
            if entry.image == self.image and self._allowed(entry):
                return entry, "partial"
        return None, "miss"

    # Incremental build folders -----------------------------------------------------------

    async def restore_build_folders(self) -> None:
        """After install, once: the folders of the newest successful build of the branch,
        else of production."""
        if self._build_folders_restored or not self.folders:
            return
        self._build_folders_restored = True
        run, request = self.run, self.run.request
        key = f"{self.scope}-{run.build_id}"
        use = CacheUse(kind="incremental", key=key, result="miss")
        started = time.monotonic()
        entry: CacheEntry | None = None
        try:
            entries = [
                e
                for e in await self.owner.index.entries(request.project_id, "incremental")
                if self._allowed(e)
            ]
            same = [
                e
                for e in entries
                if e.branch == request.branch and e.production == request.production
            ]
            entry = (same or entries or [None])[0]
            created = [self._first_missing(folder) for folder in self._in_workspace]
            restored = entry is not None and await self.owner.restore(
                self.run, entry, run.workspace, self._in_workspace
            )
            if restored:
                for path in created:
                    if path is not None and path.exists():
                        await hand_workspace_to(path, self.owner.settings.build_user)
        except _CACHE_FAILURES as exc:
            await run.logs.system(f"Incremental cache: not restored ({exc}); building without")
            restored = False
        folders = ", ".join(self.folders)
        if restored and entry is not None:
            use.result = "hit" if same and entry is same[0] else "partial"
            use.key = entry.key
            use.size_bytes = entry.size_bytes
            use.restore_seconds = round(time.monotonic() - started, 3)
            origin = f"branch {entry.branch}" if use.result == "hit" else "production"
            await run.logs.system(
                f"Incremental cache: {use.result}, key {entry.key} ({folders}), "
                f"{size_text(entry.size_bytes)} from build {entry.build_id} of {origin} "
                f"restored in {use.restore_seconds:.1f}s"
            )
        else:
            await run.logs.system(f"Incremental cache: miss ({folders})")
        run.caches.append(use)
        self._pending.append(_Pending("incremental", key, self._in_workspace, use))

    def _first_missing(self, folder: str) -> Path | None:
        """The outermost part of `folder` (in the workspace) that is not there yet, which
        restoring creates; None when all of it is there or a link is on the way."""
        path = self.run.workspace
        for part in Path(folder).parts:
            path = path / part
            if path.is_symlink():
                return None
            if not path.exists():
                return path
        return None

    # Restoring and saving ----------------------------------------------------------------

    async def save(self) -> None:
        """After the build succeeded: save each cache whose key is new."""
        for pending in self._pending:
            title = _TITLES[pending.kind]
            try:
                await self._save(pending, title)
            except _CACHE_FAILURES as exc:
                await self.run.logs.system(f"{title}: not saved ({exc})")
        self._pending.clear()

    async def _save(self, pending: _Pending, title: str) -> None:
        owner, run, request = self.owner, self.run, self.run.request
        index, project_id = owner.index, request.project_id
        token = await index.claim_save(project_id, pending.kind, pending.key, SAVE_LEASE_SECONDS)
        if token is None:
            await run.logs.system(
                f"{title}: not saved, another build of the project is saving key {pending.key}"
            )
            return
        archive = run.archive.with_name(f"{run.archive.name}.{pending.kind}.tar.gz")
        try:
            if await index.get(project_id, pending.kind, pending.key) is not None:
                await run.logs.system(f"{title}: not saved, key {pending.key} is saved already")
                return
            started = time.monotonic()
            packed = await asyncio.to_thread(pack_folders, run.workspace, pending.folders, archive)
            if packed is None:
                await run.logs.system(f"{title}: nothing to save ({', '.join(pending.folders)})")
                return
            limit = owner.settings.cache_max_bytes
            if packed.size > limit:
                await run.logs.system(
                    f"{title}: not saved, {size_text(packed.size)} is over the project's "
                    f"cache limit of {size_text(limit)} (GOBUILD_CACHE_MAX_BYTES)"
                )
                return
            if not await owner.storage.upload_cache(project_id, pending.kind, pending.key, packed):
                await run.logs.system(f"{title}: not saved, key {pending.key} is saved already")
                return
            entry = CacheEntry(
                project_id=project_id,
                kind=pending.kind,
                key=pending.key,
                size_bytes=packed.size,
                sha256=packed.sha256,
                image=self.image,
                branch=request.branch,
                production=request.production,
                build_id=request.build_id,
            )
            await index.record(entry)
            pending.use.save_seconds = round(time.monotonic() - started, 3)
            if pending.use.result == "miss":
                pending.use.size_bytes = packed.size
            await run.logs.system(
                f"{title}: saved key {pending.key}, {size_text(packed.size)} "
                f"({packed.files} files) in {pending.use.save_seconds:.1f}s"
            )
        finally:
            await asyncio.to_thread(archive.unlink, missing_ok=True)
            await index.release_save(project_id, pending.kind, pending.key, token)
        if pending.kind == "incremental":
            await self.owner.drop_older_incremental(entry)
        await self.owner.prune(keep=entry)
