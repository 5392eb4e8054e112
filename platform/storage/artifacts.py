"""Build artifacts on disk: `<build_id>.tar.gz` plus its checksum in sha256sum format.

An upload streams to a temporary file while it is hashed; only a complete upload whose
checksum matches is renamed into place, so readers never see a partial archive. A crash
mid-upload leaves the temporary file behind; `remove_partial_uploads` clears those at start.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import logging
import os
import tempfile
import threading
from collections.abc import AsyncIterable, Callable
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

from gobuild.platform.events import ArtifactRef

log = logging.getLogger(__name__)
T = TypeVar("T")

ARCHIVE_SUFFIX = ".tar.gz"
CHECKSUM_SUFFIX = ".sha256"
# Temporary files: `.<build_id>.<random>.upload` (an upload) and `.<archive>.sha256.tmp`.
UPLOAD_SUFFIX = ".upload"
TEMP_CHECKSUM_SUFFIX = CHECKSUM_SUFFIX + ".tmp"
DEFAULT_MAX_ARTIFACT_BYTES = 2 * 1024**3
# Chunks from the network are small; write in larger slices to keep thread hops few.
WRITE_BUFFER_BYTES = 1024 * 1024
HASH_READ_BYTES = 1024 * 1024


class ChecksumMismatchError(Exception):
    """The uploaded bytes do not hash to the checksum the client announced."""

    def __init__(self, expected: str, actual: str) -> None:
        super().__init__(f"expected sha256 {expected}, got {actual}")
        self.expected = expected
        self.actual = actual


class ArtifactTooLargeError(Exception):
    """The upload went over the configured size limit."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"artifact is larger than {limit} bytes")
        self.limit = limit


class ArtifactWriteError(Exception):
    """The upload could not be written to disk (full, read-only, gone); says which."""

    def __init__(self, build_id: str, error: OSError) -> None:
        reason = error.strerror or str(error) or type(error).__name__
        if error.filename:
            reason = f"{reason} ({error.filename})"
        super().__init__(f"writing the artifact of {build_id} to disk failed: {reason}")
        self.disk_full = error.errno in (errno.ENOSPC, errno.EDQUOT)


def archive_name(build_id: str) -> str:
    return f"{build_id}{ARCHIVE_SUFFIX}"


class ArtifactStore:
    """Stores, describes and removes build artifacts under one folder."""

    def __init__(self, root: Path, max_bytes: int = DEFAULT_MAX_ARTIFACT_BYTES) -> None:
        self.root = root
        self.max_bytes = max_bytes
        # Serializes replacing an archive and its checksum file against reading them.
        self._publish_lock = threading.Lock()

    def archive_path(self, build_id: str) -> Path:
        return self.root / archive_name(build_id)

    def checksum_path(self, build_id: str) -> Path:
        return self.root / f"{archive_name(build_id)}{CHECKSUM_SUFFIX}"

    async def save(
        self, build_id: str, chunks: AsyncIterable[bytes], expected_sha256: str | None = None
    ) -> ArtifactRef:
        """Stream `chunks` to disk; raises ChecksumMismatchError or ArtifactTooLargeError
        (and keeps nothing) when the upload is not acceptable, ArtifactWriteError when the
        disk refuses it."""
        file, temp_path = await _on_disk(build_id, self._create_temp_file, build_id)
        hasher = hashlib.sha256()
        size = 0
        buffer = bytearray()
        published = False
        try:
            async for chunk in chunks:
                size += len(chunk)
                if size > self.max_bytes:
                    raise ArtifactTooLargeError(self.max_bytes)
                buffer += chunk
                if len(buffer) >= WRITE_BUFFER_BYTES:
                    data = bytes(buffer)
                    buffer.clear()
                    await _on_disk(build_id, write_and_hash, file, hasher, data)
            await _on_disk(build_id, write_and_hash, file, hasher, bytes(buffer))
            await _on_disk(build_id, flush_and_close, file)
            digest = hasher.hexdigest()
            if expected_sha256 is not None and expected_sha256 != digest:
                raise ChecksumMismatchError(expected_sha256, digest)
            await _on_disk(build_id, self._publish, build_id, temp_path, digest)
            published = True
        finally:
            if not published:
                # Runs on cancellation too, so it stays synchronous: close and unlink only.
                file.close()
                with contextlib.suppress(FileNotFoundError):
                    temp_path.unlink()
        log.info("stored artifact %s (%d bytes, sha256 %s)", build_id, size, digest)
        return ArtifactRef(name=archive_name(build_id), sha256=digest, size=size)

    async def remove_partial_uploads(self) -> int:
        """Remove the temporary files of uploads a crash cut short; call before serving."""
        return await asyncio.to_thread(self._remove_partial_uploads)

    async def describe(self, build_id: str) -> ArtifactRef | None:
        """The stored artifact's name, checksum and size, or None if there is none."""
        return await asyncio.to_thread(self._describe, build_id)

    async def delete(self, build_id: str) -> bool:
        return await asyncio.to_thread(self._delete, build_id)

    def _create_temp_file(self, build_id: str) -> tuple[BinaryIO, Path]:
        self.root.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=self.root, prefix=f".{build_id}.", suffix=UPLOAD_SUFFIX)
        return os.fdopen(fd, "wb"), Path(name)

    def _publish(self, build_id: str, temp_path: Path, digest: str) -> None:
        # Order: drop the old checksum, move the archive in, then write the checksum. A crash
        # at any point leaves either a matching pair or an archive without a checksum, which
        # `_describe` recomputes.
        with self._publish_lock:
            with contextlib.suppress(FileNotFoundError):
                self.checksum_path(build_id).unlink()
            os.replace(temp_path, self.archive_path(build_id))
            self._write_checksum(build_id, digest)

    def _write_checksum(self, build_id: str, digest: str) -> None:
        target = self.checksum_path(build_id)
        temp = target.with_name(f".{archive_name(build_id)}{TEMP_CHECKSUM_SUFFIX}")
        temp.write_text(f"{digest}  {archive_name(build_id)}\n", encoding="ascii")
        os.replace(temp, target)

    def _describe(self, build_id: str) -> ArtifactRef | None:
        with self._publish_lock:
            try:
                size = self.archive_path(build_id).stat().st_size
            except FileNotFoundError:
                return None
            try:
                digest = self.checksum_path(build_id).read_text(encoding="ascii").split()[0]
            except (FileNotFoundError, IndexError):
                digest = _hash_file(self.archive_path(build_id))
                self._write_checksum(build_id, digest)
        return ArtifactRef(name=archive_name(build_id), sha256=digest, size=size)

    def _remove_partial_uploads(self) -> int:
        if not self.root.is_dir():
            return 0
        removed = 0
        for path in self.root.iterdir():
            name = path.name
            partial = name.startswith(".") and name.endswith((UPLOAD_SUFFIX, TEMP_CHECKSUM_SUFFIX))
            if partial and path.is_file() and not path.is_symlink():
                path.unlink(missing_ok=True)
                removed += 1
        return removed

    def _delete(self, build_id: str) -> bool:
        with self._publish_lock:
            existed = self.archive_path(build_id).exists()
            for path in (self.archive_path(build_id), self.checksum_path(build_id)):
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
        return existed


async def _on_disk(build_id: str, func: Callable[..., T], *args: Any) -> T:
    """Run a blocking file operation in a thread; an OSError becomes ArtifactWriteError."""
    try:
        return await asyncio.to_thread(func, *args)
    except OSError as exc:
        raise ArtifactWriteError(build_id, exc) from exc


def write_and_hash(file: BinaryIO, hasher: hashlib._Hash, data: bytes) -> None:
    if data:
        hasher.update(data)
        file.write(data)


def flush_and_close(file: BinaryIO) -> None:
    file.flush()
    os.fsync(file.fileno())
    file.close()


def _hash_file(path: Path) -> str:
    hasher = hashlib.sha256()
    with path.open("rb") as file:
        while chunk := file.read(HASH_READ_BYTES):
            hasher.update(chunk)
    return hasher.hexdigest()
