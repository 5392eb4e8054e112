"""Stream a file from disk as a response: chunked reads off the event loop, Range,
ETag / Last-Modified conditional requests and HEAD."""

from __future__ import annotations

import asyncio
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import BinaryIO

from quart import Response, request
from quart.wrappers.response import ResponseBody
from werkzeug.exceptions import RequestedRangeNotSatisfiable

READ_CHUNK_BYTES = 256 * 1024
# A large file over a slow link takes long; the response still ends after this.
FILE_RESPONSE_TIMEOUT_SECONDS = 3600


class FileStream(ResponseBody):
    """A byte range of a file, read in chunks in a worker thread.

    `size` is the length to serve: for a log that is still growing it is the committed
    length, so readers never see a half-written chunk.
    """

    def __init__(self, path: Path, size: int, chunk_bytes: int = READ_CHUNK_BYTES) -> None:
        self.path = path
        self.size = size
        self.begin = 0
        self.end = size
        self._chunk_bytes = chunk_bytes
        self._file: BinaryIO | None = None
        self._position = 0

    async def __aenter__(self) -> FileStream:
        self._file = await asyncio.to_thread(self._open)
        self._position = self.begin
        return self

    def _open(self) -> BinaryIO:
        file = self.path.open("rb")
        file.seek(self.begin)
        return file

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._file is not None:
            await asyncio.to_thread(self._file.close)
            self._file = None

    def __aiter__(self) -> FileStream:
        return self

    async def __anext__(self) -> bytes:
        remaining = self.end - self._position
        if remaining <= 0 or self._file is None:
            raise StopAsyncIteration
        chunk = await asyncio.to_thread(self._file.read, min(self._chunk_bytes, remaining))
        if not chunk:
            raise StopAsyncIteration
        self._position += len(chunk)
        return chunk

    async def make_conditional(self, begin: int, end: int | None) -> int:
        """Narrow to a `Range` request; returns the complete length."""
        if begin < 0:
            begin = max(self.size + begin, 0)
        end = self.size if end is None else min(end, self.size)
        if begin >= end:
            raise RequestedRangeNotSatisfiable(length=self.size)
        self.begin, self.end = begin, end
        return self.size


async def file_response(
    path: Path,
    *,
    size: int,
    content_type: str,
    etag: str | None = None,
    last_modified: datetime | None = None,
    attachment_name: str | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    """A streamed file response for the current request (GET or HEAD)."""
    response = Response(FileStream(path, size), content_type=content_type, headers=headers)
    response.content_length = size
    response.timeout = FILE_RESPONSE_TIMEOUT_SECONDS
    response.headers["Accept-Ranges"] = "bytes"
    if etag is not None:
        response.set_etag(etag)
    if last_modified is not None:
        response.last_modified = last_modified
    if attachment_name is not None:
        response.headers.set("Content-Disposition", "attachment", filename=attachment_name)
    await response.make_conditional(request, accept_ranges=True, complete_length=size)
    if request.method == "HEAD":
        length = response.content_length
        response.response = response.data_body_class(b"")
        if length is not None:
            response.content_length = length
    return response
