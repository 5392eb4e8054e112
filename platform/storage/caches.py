"""Cache archives on disk: `<project>/<kind>/<key>.tar.gz` plus its checksum in sha256sum
format, under one folder.

A cache is immutable: an upload streams to a temporary file while it is hashed, and is then
linked into place only if its key is still free (`os.link` fails on an existing name), so two
builds saving one key at once leave one complete archive and never a mix. Builders on every
host share what is kept here.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import secrets
import shutil
from collections.abc import AsyncIterable
from dataclasses import dataclass
from pathlib import Path

from gobuild.platform.cache_records import StoredCacheKind
from gobuild.platform.storage.uploads import UPLOAD_SUFFIX, receive_file

log = logging.getLogger(__name__)

ARCHIVE_SUFFIX = ".tar.gz"
CHECKSUM_SUFFIX = ".sha256"
_TEMP_CHECKSUM_SUFFIX = CHECKSUM_SUFFIX + ".tmp"
# A project's caches being removed are renamed so first (uploads then start a fresh folder).
_REMOVING_PREFIX = ".removing-"
_HASH_READ_BYTES = 1024 * 1024


@dataclass(frozen=True)
class CacheBlob:
    """A stored cache archive: its name, checksum and size."""

    name: str
    sha256: str
    size: int


@dataclass(frozen=True)
class RemovedCaches:
    archives: int
    bytes: int


class CacheBlobs:
    """Stores, describes and removes cache archives; the caller checks the names."""

    def __init__(self, root: Path, max_bytes: int) -> None:
        self.root = root
        self.max_bytes = max_bytes

    def archive_path(self, project_id: str, kind: StoredCacheKind, key: str) -> Path:
        return self.root / project_id / kind / f"{key}{ARCHIVE_SUFFIX}"

    async def save_new(
        self,
        project_id: str,
        kind: StoredCacheKind,
        key: str,
        chunks: AsyncIterable[bytes],
        expected_sha256: str | None = None,
    ) -> CacheBlob | None:
        """Stream `chunks` to disk and keep them as this cache; None (nothing kept) when the key
        is taken. Raises ChecksumMismatchError, UploadTooLargeError or OSError and keeps
        nothing when the upload is not acceptable."""
        target = self.archive_path(project_id, kind, key)
        received = await receive_file(
            chunks,
            target.parent,
            prefix=key,
            max_bytes=self.max_bytes,
            expected_sha256=expected_sha256,
        )
        try:
            published = await asyncio.to_thread(_link_if_free, received.path, target)
        finally:
            await asyncio.to_thread(received.path.unlink, missing_ok=True)
        if not published:
            return None
        await asyncio.to_thread(_write_checksum, target, received.sha256)
        log.info("stored cache %s (%d bytes, sha256 %s)", target, received.size, received.sha256)
        return CacheBlob(name=target.name, sha256=received.sha256, size=received.size)

    async def describe(self, project_id: str, kind: StoredCacheKind, key: str) -> CacheBlob | None:
        return await asyncio.to_thread(self._describe, self.archive_path(project_id, kind, key))

    async def delete(self, project_id: str, kind: StoredCacheKind, key: str) -> bool:
        return await asyncio.to_thread(_delete, self.archive_path(project_id, kind, key))

    async def delete_project(self, project_id: str) -> RemovedCaches:
        """Remove every cache of the project; how many archives and bytes went."""
        return await asyncio.to_thread(self._delete_project, project_id)

    async def remove_partial_uploads(self) -> int:
        """Remove what a crash left behind (uploads, half-removed projects); before serving."""
        return await asyncio.to_thread(self._remove_partial_uploads)

    def _describe(self, archive: Path) -> CacheBlob | None:
        try:
            size = archive.stat().st_size
        except FileNotFoundError:
            return None
        checksum = archive.with_name(archive.name + CHECKSUM_SUFFIX)
        try:
            digest = checksum.read_text(encoding="ascii").split()[0]
        except (FileNotFoundError, IndexError):
            # Published, but the checksum file was not written yet (or a crash came between).
            try:
                digest = _hash_file(archive)
            except FileNotFoundError:
                return None
            _write_checksum(archive, digest)
        return CacheBlob(name=archive.name, sha256=digest, size=size)

    def _delete_project(self, project_id: str) -> RemovedCaches:
        folder = self.root / project_id
        doomed = self.root / f"{_REMOVING_PREFIX}{project_id}.{secrets.token_hex(4)}"
        try:
            folder.rename(doomed)
        except FileNotFoundError:
            return RemovedCaches(0, 0)
        archives = size = 0
        for path in doomed.rglob(f"*{ARCHIVE_SUFFIX}"):
            if path.is_file() and not path.name.startswith("."):
                archives += 1
                size += path.stat().st_size
        shutil.rmtree(doomed, ignore_errors=True)
        return RemovedCaches(archives, size)

    def _remove_partial_uploads(self) -> int:
        if not self.root.is_dir():
            return 0
        removed = 0
        for path in self.root.iterdir():
            if path.name.startswith(_REMOVING_PREFIX):
                shutil.rmtree(path, ignore_errors=True)
                removed += 1
        for path in self.root.glob("*/*/.*"):
            partial = path.name.endswith((UPLOAD_SUFFIX, _TEMP_CHECKSUM_SUFFIX))
            if partial and path.is_file() and not path.is_symlink():
                path.unlink(missing_ok=True)
                removed += 1
        return removed


def _link_if_free(source: Path, target: Path) -> bool:
    try:
        os.link(source, target)
    except FileExistsError:
        return False
    return True


def _write_checksum(archive: Path, digest: str) -> None:
    target = archive.with_name(archive.name + CHECKSUM_SUFFIX)
    temp = archive.with_name(f".{archive.name}.{secrets.token_hex(4)}{_TEMP_CHECKSUM_SUFFIX}")
    temp.write_text(f"{digest}  {archive.name}\n", encoding="ascii")
    os.replace(temp, target)


def _delete(archive: Path) -> bool:
    existed = archive.exists()
    for path in (archive, archive.with_name(archive.name + CHECKSUM_SUFFIX)):
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
    return existed


def _hash_file(path: Path) -> str:
    hasher = hashlib.sha256()
    with path.open("rb") as file:
        while chunk := file.read(_HASH_READ_BYTES):
            hasher.update(chunk)
    return hasher.hexdigest()
