"""Deployment content: a build's artifact unpacked into `<deployments_dir>/<deployment_id>/`,
and the lookup of a requested path inside it that never leaves that folder."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
import shutil
import stat
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gobuild.platform.storage.archive import (
    STAGING_SUFFIX,
    ArchiveLimits,
    extract_archive,
    remove_staging_folders,
)
from gobuild.platform.storage.artifacts import ArtifactStore
from gobuild.platform.storage.keyed_lock import KeyedLock

log = logging.getLogger(__name__)

# Bookkeeping lives beside the deployment folders under names that are never a DNS label.
META_DIR_NAME = ".meta"
INDEX_FILE = "index.html"


@dataclass(frozen=True)
class DeploymentInfo:
    deployment_id: str
    build_id: str | None
    files: int
    bytes: int

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ServedFile:
    """A regular file inside a deployment, ready to be streamed."""

    path: Path
    size: int
    modified: datetime
    etag: str


class ArtifactMissingError(Exception):
    """The build to deploy has no stored artifact."""


class DeploymentConflictError(Exception):
    """The deployment id already holds another build's content."""

    def __init__(self, deployment_id: str, build_id: str | None) -> None:
        super().__init__(f"deployment '{deployment_id}' already holds build '{build_id}'")
        self.build_id = build_id


class DeploymentFiles:
    def __init__(
        self, root: Path, artifacts: ArtifactStore, limits: ArchiveLimits | None = None
    ) -> None:
        self.root = root
        self.artifacts = artifacts
        self.limits = limits or ArchiveLimits()
        self._locks = KeyedLock()

    def folder(self, deployment_id: str) -> Path:
        return self.root / deployment_id

    def _meta_path(self, deployment_id: str) -> Path:
        return self.root / META_DIR_NAME / f"{deployment_id}.json"

    async def deploy(self, deployment_id: str, build_id: str) -> tuple[DeploymentInfo, bool]:
        """Unpack `build_id`'s artifact as `deployment_id`; returns (info, created).

        Deploying the same build again returns the existing deployment. Raises
        ArtifactMissingError, DeploymentConflictError or an ArchiveError.
        """
        async with self._locks.hold(deployment_id):
            existing = await asyncio.to_thread(self._describe, deployment_id)
            if existing is not None:
                if existing.build_id not in (None, build_id):
                    raise DeploymentConflictError(deployment_id, existing.build_id)
                return existing, False
            archive = self.artifacts.archive_path(build_id)
            info = await asyncio.to_thread(self._unpack, deployment_id, build_id, archive)
        log.info(
            "deployed build %s as %s (%d files, %d bytes)",
            build_id,
            deployment_id,
            info.files,
            info.bytes,
        )
        return info, True

    async def describe(self, deployment_id: str) -> DeploymentInfo | None:
        return await asyncio.to_thread(self._describe, deployment_id)

    async def delete(self, deployment_id: str) -> bool:
        async with self._locks.hold(deployment_id):
            return await asyncio.to_thread(self._delete, deployment_id)

    async def find_file(self, deployment_id: str, path: str) -> ServedFile | None:
        """The file to serve for `path` (a folder serves its index.html), or None when
        there is none or the path would lead outside the deployment."""
        return await asyncio.to_thread(self._find_file, deployment_id, path)

    async def remove_interrupted(self) -> int:
        """Remove what an extraction or deletion cut short by a crash left behind."""
        return await asyncio.to_thread(remove_staging_folders, self.root)

    def _unpack(self, deployment_id: str, build_id: str, archive: Path) -> DeploymentInfo:
        missing = ArtifactMissingError(f"build '{build_id}' has no stored artifact")
        if not archive.is_file():
            raise missing
        try:
            result = extract_archive(archive, self.folder(deployment_id), self.limits)
        except FileNotFoundError as exc:
            if not archive.is_file():  # deleted between the check and the extraction
                raise missing from exc
            raise
        info = DeploymentInfo(deployment_id, build_id, result.files, result.bytes)
        self._write_meta(info)
        return info

    def _write_meta(self, info: DeploymentInfo) -> None:
        target = self._meta_path(info.deployment_id)
        target.parent.mkdir(parents=True, exist_ok=True)
        temp = target.with_name(f".{target.name}.tmp")
        temp.write_text(json.dumps(info.as_json()), encoding="utf-8")
        os.replace(temp, target)

    def _describe(self, deployment_id: str) -> DeploymentInfo | None:
        folder = self.folder(deployment_id)
        if not folder.is_dir():
            return None
        try:
            data = json.loads(self._meta_path(deployment_id).read_text(encoding="utf-8"))
            return DeploymentInfo(**data)
        except (OSError, ValueError, TypeError):
            # Published but the bookkeeping was lost (crash between the two): count again.
            info = _count_files(deployment_id, folder)
            self._write_meta(info)
            return info

    def _delete(self, deployment_id: str) -> bool:
        folder = self.folder(deployment_id)
        existed = folder.is_dir()
        if existed:
            # Renamed away first so the deployment disappears at once; the staging name
            # lets `remove_interrupted` finish the job if the process dies mid-way.
            doomed = self.root / f".{deployment_id}.{secrets.token_hex(4)}{STAGING_SUFFIX}"
            os.rename(folder, doomed)
            shutil.rmtree(doomed, ignore_errors=True)
        self._meta_path(deployment_id).unlink(missing_ok=True)
        return existed

    def _find_file(self, deployment_id: str, path: str) -> ServedFile | None:
        folder = self.folder(deployment_id)
        if "\x00" in path or path.startswith("/"):
            return None
        parts = [part for part in path.split("/") if part not in ("", ".")]
        if ".." in parts:
            return None
        try:
            root = folder.resolve(strict=True)
            candidate = folder.joinpath(*parts).resolve(strict=True)
            if candidate.is_dir():
                candidate = (candidate / INDEX_FILE).resolve(strict=True)
            if not candidate.is_relative_to(root):
                return None  # a symlink that leads out of the deployment
            info = candidate.stat()
        except (OSError, RuntimeError):
            return None
        if not stat.S_ISREG(info.st_mode):
            return None
        return ServedFile(
            path=candidate,
            size=info.st_size,
            modified=datetime.fromtimestamp(info.st_mtime, UTC),
            etag=f"{info.st_size:x}-{info.st_mtime_ns:x}",
        )


def _count_files(deployment_id: str, folder: Path) -> DeploymentInfo:
    files = 0
    total = 0
    for dirpath, _dirnames, filenames in os.walk(folder):
        for filename in filenames:
            info = os.lstat(os.path.join(dirpath, filename))
            if stat.S_ISREG(info.st_mode):
                files += 1
                total += info.st_size
    return DeploymentInfo(deployment_id, None, files, total)
