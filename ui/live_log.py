"""A build's log for one viewer: the stored log (the backlog) first, then the live chunks from
`build-logs`, joined without a gap or a repeat.

Storage answers the backlog with the `(attempt, seq)` of the last chunk it holds
(`X-Log-Position`); a live chunk at or before that position is already in it, and the next one
must be its successor (the next `seq`, or `seq` 0 of a later attempt). A chunk that comes
before its predecessor arrived (the page read storage a moment before storage wrote it) waits;
if the predecessor does not turn up, the missing lines are read from storage again.

Only the last `tail_lines` lines are rendered for the browser; earlier ones are read again from
storage when asked for, so neither the page nor this process holds a whole long log.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Protocol

import httpx

from gobuild.platform.events import LogChunk
from gobuild.platform.log_patterns import classify_line
from gobuild.ui.console_lines import ConsoleLine, render_line

log = logging.getLogger(__name__)

POSITION_HEADER = "X-Log-Position"
COMPLETE_HEADER = "X-Log-Complete"
# Error lines listed in the summary (the first ones; a flood of errors adds nothing).
MAX_ERROR_LINES = 200
# How long a chunk waits for its predecessor before storage is read again, and how often.
GAP_WAIT_SECONDS = 1.0
GAP_RETRIES = 5

Position = tuple[int, int]
# Opens the stored log (plain text) as a streamed response.
OpenLog = Callable[[], AbstractAsyncContextManager[httpx.Response]]


class LogSink(Protocol):
    """Where the viewer's log goes (the page)."""

    def replace_lines(self, lines: list[ConsoleLine], total: int) -> None: ...

    def append_lines(self, lines: list[ConsoleLine]) -> None: ...

    def errors_changed(self, errors: list[ConsoleLine]) -> None: ...


def parse_position(value: str | None) -> Position | None:
    """`"2:41"` → (2, 41); None for an absent or malformed header, or the position before
    any chunk."""
    if not value:
        return None
    attempt, _, seq = value.partition(":")
    try:
        position = (int(attempt), int(seq))
    except ValueError:
        return None
    return position if position[0] >= 1 and position[1] >= 0 else None


def follows(position: Position | None, key: Position) -> bool:
    """Whether the chunk `key` comes right after `position` in the log."""
    if position is None:
        return key[1] == 0
    attempt, seq = position
    return (key[0] == attempt and key[1] == seq + 1) or (key[0] > attempt and key[1] == 0)


async def _lines_of(response: httpx.Response) -> AsyncIterator[str]:
    """The lines of a streamed log; only `\\n` ends a line (a `\\r` belongs to the line)."""
    rest = ""
    async for text in response.aiter_text():
        rest += text
        *lines, rest = rest.split("\n")
        for line in lines:
            yield line
        await asyncio.sleep(0)  # a long log does not hold up the other pages
    if rest:
        yield rest


@dataclass
class LogFeed:
    """One viewer's log of one build."""

    open_log: OpenLog
    sink: LogSink
    tail_lines: int = 5_000
    # Sees every line once, in order (the step tracker reads GoBuild's own lines).
    on_line: Callable[[str], None] | None = None
    position: Position | None = None
    total: int = 0
    complete: bool = False
    errors: list[ConsoleLine] = field(default_factory=list)
    _pending: dict[Position, LogChunk] = field(default_factory=dict)
    _gap_task: asyncio.Task[None] | None = None

    async def load_backlog(self) -> None:
        """Read the stored log: its last `tail_lines` lines go to the sink, its error lines
        to the summary; live chunks it already holds are skipped from now on."""
        tail: deque[tuple[int, str]] = deque(maxlen=self.tail_lines)
        errors: list[ConsoleLine] = []
        number = 0
        async with self.open_log() as response:
            position = parse_position(response.headers.get(POSITION_HEADER))
            complete = response.headers.get(COMPLETE_HEADER, "").lower() == "true"
            async for raw in _lines_of(response):
                number += 1
                tail.append((number, raw))
                if self.on_line is not None:
                    self.on_line(raw)
                if len(errors) < MAX_ERROR_LINES and classify_line(raw) == "error":
                    errors.append(render_line(number, raw))
        self.position, self.total, self.complete = position, number, complete
        self.errors = errors
        self.sink.replace_lines([render_line(n, raw) for n, raw in tail], number)
        self.sink.errors_changed(list(self.errors))
        self._forget_applied()
        self._drain()

    def add_chunk(self, chunk: LogChunk) -> None:
        """A live chunk: shown now if it is the next one, kept if one before it is missing,
        dropped if the log already holds it."""
        key = (chunk.attempt, chunk.seq)
        if self.position is not None and key <= self.position:
            return
        self._pending[key] = chunk
        self._drain()

    def add_chunks(self, chunks: list[LogChunk]) -> None:
        for chunk in chunks:
            self.add_chunk(chunk)

    async def read_lines(self, first: int, last: int) -> list[ConsoleLine]:
        """Lines `first`..`last` (1-based, inclusive) of the stored log."""
        lines: list[ConsoleLine] = []
        number = 0
        async with self.open_log() as response:
            async for raw in _lines_of(response):
                number += 1
                if number > last:
                    break
                if number >= first:
                    lines.append(render_line(number, raw))
        return lines

    def close(self) -> None:
        if self._gap_task is not None:
            self._gap_task.cancel()
            self._gap_task = None

    def _drain(self) -> None:
        appended: list[ConsoleLine] = []
        errors_before = len(self.errors)
        while self._pending:
            key = min(self._pending)
            if not follows(self.position, key):
                break
            chunk = self._pending.pop(key)
            for raw in chunk.lines:
                self.total += 1
                if self.on_line is not None:
                    self.on_line(raw)
                line = render_line(self.total, raw)
                appended.append(line)
                if line.level == "error" and len(self.errors) < MAX_ERROR_LINES:
                    self.errors.append(line)
            self.position = key
            self.complete = chunk.final
        if appended:
            self.sink.append_lines(appended)
        if len(self.errors) != errors_before:
            self.sink.errors_changed(list(self.errors))
        if self._pending and self._gap_task is None:
            self._gap_task = asyncio.create_task(self._close_gap(), name="log-gap")
            self._gap_task.add_done_callback(_log_failure)

    async def _close_gap(self) -> None:
        """Read from storage what lies between the log shown and the chunks waiting."""
        for _ in range(GAP_RETRIES):
            await asyncio.sleep(GAP_WAIT_SECONDS)
            if not self._pending or follows(self.position, min(self._pending)):
                break
            await self._catch_up()
            self._forget_applied()
            if not self._pending or follows(self.position, min(self._pending)):
                break
        else:
            # Storage does not have the missing chunks either: they are lost; go on after them.
            log.warning("log chunks before %s never arrived; continuing", min(self._pending))
            self.position = _before(min(self._pending))
        self._gap_task = None
        self._drain()

    async def _catch_up(self) -> None:
        fresh: list[ConsoleLine] = []
        number = 0
        async with self.open_log() as response:
            position = parse_position(response.headers.get(POSITION_HEADER))
            async for raw in _lines_of(response):
                number += 1
                if number > self.total:
                    fresh.append(render_line(number, raw))
                    if self.on_line is not None:
                        self.on_line(raw)
        if position is None or (self.position is not None and position <= self.position):
            return
        self.position, self.total = position, max(self.total, number)
        found = [line for line in fresh if line.level == "error"]
        self.errors.extend(found[: max(0, MAX_ERROR_LINES - len(self.errors))])
        if fresh:
            self.sink.append_lines(fresh)
        if found:
            self.sink.errors_changed(list(self.errors))

    def _forget_applied(self) -> None:
        if self.position is None:
            return
        for key in [k for k in self._pending if k <= self.position]:
            del self._pending[key]


def _before(key: Position) -> Position | None:
    """A position `key` follows (to resume after chunks that were lost for good)."""
    attempt, seq = key
    return (attempt, seq - 1) if seq > 0 else None


def _log_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.warning("reading missing log lines failed", exc_info=task.exception())
