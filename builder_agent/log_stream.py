"""Batch a build's console lines into ordered `LogChunk` events on `build-logs`.

A chunk holds lines of one stream; a new chunk starts when the stream changes, when the batch is
full (lines or bytes) and at least every flush interval. A line after a quiet spell (no chunk
for a flush interval) goes out at once, so sparse output shows up without delay while bursts
are still batched. Chunks are numbered from 0 per attempt
and published one at a time, in order, by a single owned task, so writers never wait for the
broker unless too many chunks are pending.

Every console line passes here, so the bounds on a build's log are kept here: a line is cut
at `MAX_LINE_BYTES`; past `GOBUILD_BUILD_LOG_MAX_BYTES` the build's output is dropped after
one notice; lines beyond `GOBUILD_BUILD_LOG_MAX_LINES_PER_SECOND` (with a burst) are dropped
and a notice says how many. GoBuild's own (system) lines are never dropped. Dropping never
blocks the writer, so the step's output is drained and the step's exit code decides.

The build's secret values are masked here too (`secrets`), in every line before it is cut or
batched, so no chunk, stored log or live view ever holds one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import deque
from typing import Literal

from gobuild.builder_agent.secret_mask import SecretMask
from gobuild.platform.bus import EventProducer
from gobuild.platform.config import Settings
from gobuild.platform.events import TOPIC_BUILD_LOGS, LogChunk
from gobuild.platform.waiting import wait_event, wait_within

log = logging.getLogger(__name__)

LogStream = Literal["stdout", "stderr", "system"]

# A chunk stays well below the broker's default 1 MiB message limit.
MAX_CHUNK_BYTES = 256 * 1024
# Chunks waiting for the broker before writers are held back.
MAX_PENDING_CHUNKS = 64
# A longer line (in UTF-8) is cut to this size, the cut marked.
MAX_LINE_BYTES = 16 * 1024
LINE_CUT_MARK = " [line cut: longer than 16 KiB]"
# A spell of lines dropped for the rate ends after this long without a dropped line.
DROP_SPELL_END_SECONDS = 1.0
_PUBLISH_ATTEMPTS = 3


def cap_line(line: str) -> str:
    """`line`, or as much of it as fits in `MAX_LINE_BYTES` with `LINE_CUT_MARK` at the end."""
    if len(line) <= MAX_LINE_BYTES // 4:  # a character is at most 4 bytes in UTF-8
        return line
    raw = line.encode("utf-8", errors="replace")
    if len(raw) <= MAX_LINE_BYTES:
        return line
    keep = MAX_LINE_BYTES - len(LINE_CUT_MARK.encode())
    # `ignore` drops only a character cut in half at the end.
    return raw[:keep].decode("utf-8", errors="ignore") + LINE_CUT_MARK


def format_size(size: int) -> str:
    """`64 MiB`, `512 KiB`, `1000 bytes`: the largest unit that divides `size`."""
    for unit, factor in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if size >= factor and size % factor == 0:
            return f"{size // factor} {unit}"
    return f"{size} bytes"


class LogLimits:
    """The bounds of one build's log: total bytes, and lines per second (a token bucket).

    Times are `time.monotonic()` seconds.
    """

    def __init__(self, *, max_bytes: int, lines_per_second: int, burst: int) -> None:
        self.max_bytes = max_bytes
        self.lines_per_second = lines_per_second
        self.burst = burst
        self.kept_bytes = 0
        self.truncated = False
        self.dropped_after_truncation = 0
        self.dropped_for_rate = 0
        # Lines dropped for the rate since the last notice, and when the last one was.
        self.spell_drops = 0
        self.last_drop_at = -math.inf
        self._tokens = float(burst)
        self._refilled_at = -math.inf
        # While the bucket is empty: when it holds a line again (drops before it cost little).
        self._next_token_at = -math.inf

    @classmethod
    def from_settings(cls, settings: Settings) -> LogLimits:
        return cls(
            max_bytes=settings.build_log_max_bytes,
            lines_per_second=settings.build_log_max_lines_per_second,
            burst=settings.build_log_line_burst,
        )

    def take_line(self, now: float) -> bool:
        """Whether an output line written at `now` is within the rate; else it is dropped."""
        if now < self._next_token_at or not self._take_token(now):
            self.spell_drops += 1
            self.dropped_for_rate += 1
            self.last_drop_at = now
            return False
        return True

    def take_bytes(self, size: int) -> bool:
        """Whether an output line of `size` bytes still fits; else the log is truncated here."""
        if self.kept_bytes + size > self.max_bytes:
            self.truncated = True
            self.dropped_after_truncation += 1
            return False
        self.kept_bytes += size
        return True

    def count_system_line(self, size: int) -> None:
        self.kept_bytes += size

    def truncation_notice(self) -> str:
        return (
            f"Log truncated: this build wrote more than {format_size(self.max_bytes)}; "
            "further output is dropped (the build goes on)"
        )

    def end_spell(self, now: float, *, force: bool = False) -> str | None:
        """The notice of a spell of dropped lines once it is over (or `force`d), else None."""
        if not self.spell_drops:
            return None
        if not force and now - self.last_drop_at < DROP_SPELL_END_SECONDS:
            return None
        dropped, self.spell_drops = self.spell_drops, 0
        lines = "line" if dropped == 1 else "lines"
        return (
            f"Log rate limit: dropped {dropped} {lines} (this build printed more than "
            f"{self.lines_per_second} lines per second)"
        )

    def _take_token(self, now: float) -> bool:
        elapsed = now - self._refilled_at
        self._tokens = min(float(self.burst), self._tokens + elapsed * self.lines_per_second)
        self._refilled_at = now
        if self._tokens < 1.0:
            self._next_token_at = now + (1.0 - self._tokens) / self.lines_per_second
            return False
        self._tokens -= 1.0
        return True


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
        self.limits = LogLimits.from_settings(settings)
        self.secrets = SecretMask()
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
        """Add one line (without its newline) to the console, within the log's bounds."""
        if self._closed:
            raise RuntimeError("the log of this build attempt is closed")
        limits = self.limits
        if stream == "system":
            line = cap_line(self.secrets.apply(line))
            size = len(line.encode("utf-8", errors="replace"))
            self._announce_drops(time.monotonic(), force=True)
            limits.count_system_line(size)
        else:
            # A build flooding its log lands here for nearly every line: dropping is cheap.
            if limits.truncated:
                limits.dropped_after_truncation += 1
                return
            now = time.monotonic()
            if not limits.take_line(now):
                return
            line = cap_line(self.secrets.apply(line))
            size = len(line.encode("utf-8", errors="replace"))
            if not limits.take_bytes(size):
                self._announce_drops(now, force=True)
                self._append("system", limits.truncation_notice())
                return
            self._announce_drops(now, force=False)
        self._append(stream, line, size)
        if len(self._ready) >= MAX_PENDING_CHUNKS:
            async with self._room:
                await self._room.wait_for(lambda: len(self._ready) < MAX_PENDING_CHUNKS)

    async def system(self, line: str) -> None:
        """A line of GoBuild's own (`Cloning ...`, `$ npm ci`, the result)."""
        await self.write("system", line)

    async def close(self, timeout: float = 30.0, *, last_line: str | None = None) -> None:
        """Publish everything written and a last chunk marked `final`, with GoBuild's
        `last_line` if given (the result: one chunk fewer than a line of its own)."""
        if self._closed:
            return
        self._announce_drops(time.monotonic(), force=True)
        if last_line is not None:
            line = cap_line(self.secrets.apply(last_line))
            size = len(line.encode("utf-8", errors="replace"))
            self.limits.count_system_line(size)
            self._append("system", line, size, hold=True)
        self._closed = True
        limits = self.limits
        if limits.dropped_after_truncation or limits.dropped_for_rate:
            log.info(
                "build %s: dropped %d log lines past the size limit and %d over the rate",
                self.build_id,
                limits.dropped_after_truncation,
                limits.dropped_for_rate,
            )
        if not self._lines:
            self._stream = "system"
        self._cut(final=True)
        task, self._task = self._task, None
        if task is None:
            return
        try:
            await wait_within(asyncio.shield(task), timeout)
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

    def _append(
        self, stream: LogStream, line: str, size: int | None = None, *, hold: bool = False
    ) -> None:
        """Put a line into the current batch; cut a chunk when the batch is due (with `hold`
        only when it must: the caller cuts it)."""
        if size is None:
            size = len(line.encode("utf-8", errors="replace"))
        if self._lines and (stream != self._stream or self._bytes + size > MAX_CHUNK_BYTES):
            self._cut()
        if not self._lines:
            self._first_line_at = asyncio.get_running_loop().time()
        self._stream = stream
        self._lines.append(line)
        self._bytes += size
        if hold:
            return
        quiet = asyncio.get_running_loop().time() - self._last_cut_at >= self._interval
        if quiet or len(self._lines) >= self._batch_lines:
            self._cut()

    def _announce_drops(self, now: float, *, force: bool) -> None:
        """Say how many lines were dropped for the rate, once their spell is over."""
        notice = self.limits.end_spell(now, force=force)
        if notice is not None:
            self.limits.count_system_line(len(notice))
            self._append("system", notice)

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
            await wait_event(self._wake, wait)
            self._wake.clear()
            if not self._closed:
                self._announce_drops(time.monotonic(), force=False)
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
