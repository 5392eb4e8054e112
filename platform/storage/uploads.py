"""Receiving an uploaded file: the request body as it arrives (an idle one is abandoned),
streamed to a temporary file while it is hashed and counted, with a size limit and the
checksum the client announced. The caller publishes the file under its name."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import re
import tempfile
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from quart import request

from gobuild.platform.storage.artifacts import (
    ChecksumMismatchError,
    flush_and_close,
    write_and_hash,
)

# Temporary files end so; `remove_partial_uploads` of each store clears a crash's leftovers.
UPLOAD_SUFFIX = ".upload"
SHA256_HEX = re.compile(r"[0-9a-f]{64}")
# An upload that sends nothing for this long is abandoned; a slow but moving one is not.
UPLOAD_IDLE_TIMEOUT_SECONDS = 120.0
# Chunks from the network are small; write in larger slices to keep thread hops few.
WRITE_BUFFER_BYTES = 1024 * 1024


class UploadTooLargeError(Exception):
    """The upload went over its size limit."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"the upload is larger than {limit} bytes")
        self.limit = limit


@dataclass(frozen=True)
class ReceivedFile:
    """A complete upload in a temporary file, not yet published."""

    path: Path
    sha256: str
    size: int


async def request_chunks(idle_timeout: float = UPLOAD_IDLE_TIMEOUT_SECONDS) -> AsyncIterator[bytes]:
    """The current request's body as it arrives; raises TimeoutError when it stalls."""
    body = request.body.__aiter__()
    while True:
        try:
            async with asyncio.timeout(idle_timeout):
                chunk = await body.__anext__()
        except StopAsyncIteration:
            return
        yield chunk


async def receive_file(
    chunks: AsyncIterable[bytes],
    folder: Path,
    *,
    prefix: str,
    max_bytes: int,
    expected_sha256: str | None = None,
) -> ReceivedFile:
    """Write `chunks` to a new temporary file in `folder`, hashing them; the file is removed
    again when the upload is too large, does not match `expected_sha256`, breaks off or the
    disk refuses it (OSError)."""
    file, path = await asyncio.to_thread(_create_temp_file, folder, prefix)
    hasher = hashlib.sha256()
    size = 0
    buffer = bytearray()
    complete = False
    try:
        async for chunk in chunks:
            size += len(chunk)
            if size > max_bytes:
                raise UploadTooLargeError(max_bytes)
            buffer += chunk
            if len(buffer) >= WRITE_BUFFER_BYTES:
                data = bytes(buffer)
                buffer.clear()
                await asyncio.to_thread(write_and_hash, file, hasher, data)
        await asyncio.to_thread(write_and_hash, file, hasher, bytes(buffer))
        await asyncio.to_thread(flush_and_close, file)
        digest = hasher.hexdigest()
        if expected_sha256 is not None and expected_sha256 != digest:
            raise ChecksumMismatchError(expected_sha256, digest)
        complete = True
    finally:
        if not complete:
            # Runs on cancellation too, so it stays synchronous: close and unlink only.
            file.close()
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
    return ReceivedFile(path=path, sha256=digest, size=size)


def _create_temp_file(folder: Path, prefix: str) -> tuple[BinaryIO, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=folder, prefix=f".{prefix}.", suffix=UPLOAD_SUFFIX)
    return os.fdopen(fd, "wb"), Path(name)
