"""Batch a build's console lines into ordered `LogChunk` events on `build-logs`.

A chunk holds lines of one stream; a new chunk starts when the stream changes, when the batch is
full (lines or bytes) and at least every flush interval. A line after a quiet spell (no chunk
for a flush interval) goes out at once, so sparse output shows up without delay while bursts
are still batched. Chunks are numbered from 0 per attempt
and published one at a time, in order, by a single owned task, so writers never wait for the
broker unless too many chunks are pending.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from typing import Literal

from gobuild.platform.bus import EventProducer
from gobuild.platform.config import Settings
from gobuild.platform.events import TOPIC_BUILD_LOGS, LogChunk

log = logging.getLogger(__name__)

LogStream = Literal["stdout", "stderr", "system"]

# A chunk stays well below the broker's default 1 MiB message limit.
MAX_CHUNK_BYTES = 256 * 1024
# Chunks waiting for the broker before writers are held back.
MAX_PENDING_CHUNKS = 64
_PUBLISH_ATTEMPTS = 3


class LogStreamer:
    """The console of one build attempt, published as `LogChunk`s keyed by build id."""

    def __init__(
        self,
        producer: EventProducer,
        settings: Settings,
        *,
        build_id: str,
        project_id: str,
        attempt: int,
    ) -> None:
        self._producer = producer
        self._interval = settings.log_flush_interval_ms / 1000
        self._batch_lines = settings.log_batch_lines
        self.build_id = build_id
        self.project_id = project_id
        self.attempt = attempt
        self._seq = 0
        self._stream: LogStream = "system"
        self._lines: list[str] = []
        self._bytes = 0
        self._first_line_at = 0.0
        self._last_cut_at = float("-inf")
        self._ready: deque[LogChunk] = deque()
        self._wake = asyncio.Event()
        self._room = asyncio.Condition()
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    async def start(self) -> None:
        self._task = asyncio.create_task(self._publish_loop(), name=f"logs-{self.build_id}")

    async def write(self, stream: LogStream, line: str) -> None:
        """Add one line (without its newline) to the console."""
        if self._closed:
            raise RuntimeError("the log of this build attempt is closed")
        size = len(line.encode("utf-8", errors="replace"))
        if self._lines and (stream != self._stream or self._bytes + size > MAX_CHUNK_BYTES):
            self._cut()
        if not self._lines:
            self._first_line_at = asyncio.get_running_loop().time()
        self._stream = stream
        self._lines.append(line)
        self._bytes += size
        quiet = asyncio.get_running_loop().time() - self._last_cut_at >= self._interval
        if quiet or len(self._lines) >= self._batch_lines:
            self._cut()
        if len(self._ready) >= MAX_PENDING_CHUNKS:
            async with self._room:
                await self._room.wait_for(lambda: len(self._ready) < MAX_PENDING_CHUNKS)

    async def system(self, line: str) -> None:
        """A line of GoBuild's own (`Cloning ...`, `$ npm ci`, the result)."""
        await self.write("system", line)

    async def close(self, timeout: float = 30.0) -> None:
        """Publish everything written and a last chunk marked `final`."""
        if self._closed:
            return
        self._closed = True
        if not self._lines:
            self._stream = "system"
        self._cut(final=True)
        task, self._task = self._task, None
        if task is None:
            return
        try:
            await asyncio.wait_for(asyncio.shield(task), timeout)
        except TimeoutError:
            log.warning("build %s: log chunks still unsent after %.0fs", self.build_id, timeout)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def abort(self) -> None:
        """Stop publishing without a final chunk (the builder is going away)."""
        self._closed = True
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def _cut(self, final: bool = False) -> None:
        """Turn the current lines into the next numbered chunk."""
        chunk = LogChunk(
            build_id=self.build_id,
            project_id=self.project_id,
            attempt=self.attempt,
            seq=self._seq,
            stream=self._stream,
            lines=self._lines,
            final=final,
        )
        self._seq += 1
        self._last_cut_at = asyncio.get_running_loop().time()
        self._lines = []
        self._bytes = 0
        self._ready.append(chunk)
        self._wake.set()

    async def _publish_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            wait = self._interval
            if self._lines:
                wait = max(0.0, self._first_line_at + self._interval - loop.time())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), wait)
            self._wake.clear()
            waited = loop.time() - self._first_line_at
            if self._lines and not self._closed and waited >= self._interval:
                self._cut()
            while self._ready:
                chunk = self._ready[0]
                await self._publish(chunk)
                self._ready.popleft()
                async with self._room:
                    self._room.notify_all()
                if chunk.final:
                    return

    async def _publish(self, chunk: LogChunk) -> None:
        delay = 0.2
        for attempt in range(1, _PUBLISH_ATTEMPTS + 1):
            try:
                await self._producer.publish(TOPIC_BUILD_LOGS, chunk)
                return
            except Exception as exc:
                if attempt == _PUBLISH_ATTEMPTS:
                    log.error(
                        "build %s: dropping log chunk %d after %d attempts: %s",
                        self.build_id,
                        chunk.seq,
                        attempt,
                        exc,
                    )
                    return
                log.warning("build %s: log chunk %d not sent (%s)", self.build_id, chunk.seq, exc)
                await asyncio.sleep(delay)
                delay *= 2
