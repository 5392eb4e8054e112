"""Build logs on disk, written from `build-logs` chunks and read by plain or following readers.

Per build: `<build_id>.log` holds the lines, `<build_id>.log.json` (written atomically after
the lines) records the last applied `(attempt, seq)`, the committed length of the log and
whether it is complete. A chunk at or below the recorded position is a redelivery and is
skipped; bytes past the committed length are left-overs of an interrupted write and are cut.
Readers only ever see committed bytes. Followers wait on a per-build event the writer sets.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import os
from collections.abc import AsyncIterator, Iterable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from gobuild.platform.events import LogChunk

log = logging.getLogger(__name__)

LOG_SUFFIX = ".log"
PROGRESS_SUFFIX = ".log.json"
FOLLOW_READ_BYTES = 64 * 1024
# Build states kept in memory besides those with followers or an unfinished log.
MAX_CACHED_BUILDS = 1024


@dataclass(frozen=True)
class LogProgress:
    """What has been written of one build's log (the sidecar file's content)."""

    attempt: int
    seq: int
    size: int
    complete: bool

    def precedes(self, chunk: LogChunk) -> bool:
        return (self.attempt, self.seq) < (chunk.attempt, chunk.seq)


# Before the first chunk: any chunk (attempt >= 1, seq >= 0) comes after this.
NO_PROGRESS = LogProgress(attempt=0, seq=-1, size=0, complete=False)


@dataclass
class _BuildLog:
    """In-memory state of one build's log, shared by the writer and its followers."""

    progress: LogProgress | None
    followers: int = 0
    writing: bool = False
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def update(self, progress: LogProgress) -> None:
        self.progress = progress
        # Swap before setting: a follower holding the old event wakes up, a new one waits.
        changed, self.changed = self.changed, asyncio.Event()
        changed.set()


class LogStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        self._builds: dict[str, _BuildLog] = {}

    def log_path(self, build_id: str) -> Path:
        return self.root / f"{build_id}{LOG_SUFFIX}"

    def progress_path(self, build_id: str) -> Path:
        return self.root / f"{build_id}{PROGRESS_SUFFIX}"

    async def progress(self, build_id: str) -> LogProgress | None:
        """The committed state of a build's log, or None if no chunk was ever written."""
        state = self._builds.get(build_id)
        if state is not None:
            return state.progress
        # Not cached on purpose: a look-up of an unknown build must not grow the cache.
        return await asyncio.to_thread(
            _load_progress, self.log_path(build_id), self.progress_path(build_id)
        )

    def follower_count(self, build_id: str) -> int:
        state = self._builds.get(build_id)
        return state.followers if state else 0

    async def apply(self, chunks: Iterable[LogChunk]) -> int:
        """Append chunks in the given order, skipping ones already applied; returns how many
        were written. Only one writer may call this at a time (the log consumer)."""
        applied = 0
        for build_id, group in itertools.groupby(chunks, key=lambda chunk: chunk.build_id):
            state = await self._state(build_id)
            state.writing = True  # pinned: followers arriving meanwhile share this state
            try:
                after, written = await asyncio.to_thread(
                    _append_chunks,
                    self.log_path(build_id),
                    self.progress_path(build_id),
                    list(group),
                )
            finally:
                state.writing = False
            applied += written
            if after != state.progress:
                state.update(after)
            self._forget_idle(build_id, state)
        self._trim_cache()
        return applied

    async def follow(self, build_id: str, max_seconds: float) -> AsyncIterator[bytes]:
        """Yield the log from the start, then each committed append, until the log is
        complete or `max_seconds` passed. Closing or cancelling the iteration (the client
        went away) unregisters the follower."""
        state = await self._state(build_id)
        state.followers += 1
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max_seconds
        offset = 0
        try:
            while loop.time() < deadline:
                # Read the event and the progress together (no await in between): an update
                # after this point sets exactly this event, so none is missed.
                changed = state.changed
                progress = state.progress or NO_PROGRESS
                if offset < progress.size:
                    limit = min(progress.size - offset, FOLLOW_READ_BYTES)
                    data = await asyncio.to_thread(
                        _read_range, self.log_path(build_id), offset, limit
                    )
                    if not data:
                        return  # the file lost committed bytes (deleted under us)
                    offset += len(data)
                    yield data
                    continue
                if progress.complete:
                    return
                try:
                    async with asyncio.timeout_at(deadline):
                        await changed.wait()
                except TimeoutError:
                    break
            log.info("follow of %s reached %.0fs; ending it", build_id, max_seconds)
        finally:
            state.followers -= 1
            self._forget_idle(build_id, state)

    async def delete(self, build_id: str) -> bool:
        """Remove a finished build's log. Followers of it end."""
        state = self._builds.pop(build_id, None)
        existed = await asyncio.to_thread(self._delete_files, build_id)
        if state is not None:
            state.update(replace(state.progress or NO_PROGRESS, size=0, complete=True))
        return existed

    async def _state(self, build_id: str) -> _BuildLog:
        state = self._builds.get(build_id)
        if state is not None:
            return state
        progress = await asyncio.to_thread(
            _load_progress, self.log_path(build_id), self.progress_path(build_id)
        )
        # Another caller may have loaded it while this one waited: keep the first, so the
        # writer and all followers share one event.
        return self._builds.setdefault(build_id, _BuildLog(progress))

    def _forget_idle(self, build_id: str, state: _BuildLog) -> None:
        finished = state.progress is None or state.progress.complete
        idle = state.followers == 0 and not state.writing
        if idle and finished and self._builds.get(build_id) is state:
            del self._builds[build_id]

    def _trim_cache(self) -> None:
        excess = len(self._builds) - MAX_CACHED_BUILDS
        if excess <= 0:
            return
        idle = [
            key for key, state in self._builds.items() if state.followers == 0 and not state.writing
        ][:excess]
        for key in idle:
            del self._builds[key]

    def _delete_files(self, build_id: str) -> bool:
        existed = self.log_path(build_id).exists()
        for path in (self.progress_path(build_id), self.log_path(build_id)):
            path.unlink(missing_ok=True)
        return existed


def _load_progress(log_path: Path, progress_path: Path) -> LogProgress | None:
    try:
        data = json.loads(progress_path.read_text(encoding="utf-8"))
        return LogProgress(**data)
    except FileNotFoundError:
        return None
    except (OSError, ValueError, TypeError) as exc:
        # Unreadable bookkeeping: keep every byte of the log and accept all chunks again;
        # a duplicate line is better than a lost one.
        size = log_path.stat().st_size if log_path.exists() else 0
        log.error("unreadable %s (%s); keeping %d bytes of log", progress_path, exc, size)
        return replace(NO_PROGRESS, size=size)


def _append_chunks(
    log_path: Path, progress_path: Path, chunks: Iterable[LogChunk]
) -> tuple[LogProgress | None, int]:
    """Append the chunks that come after the recorded progress (the sidecar on disk is the
    writer's source of truth); returns the new progress and how many chunks were written."""
    progress = _load_progress(log_path, progress_path)
    position = progress or NO_PROGRESS
    fresh: list[LogChunk] = []
    for chunk in chunks:
        if position.precedes(chunk):
            fresh.append(chunk)
            position = replace(position, attempt=chunk.attempt, seq=chunk.seq, complete=chunk.final)
    if not fresh:
        return progress, 0
    data = "".join(line + "\n" for chunk in fresh for line in chunk.lines).encode(
        "utf-8", errors="replace"
    )
    log_path.parent.mkdir(parents=True, exist_ok=True)
    committed = (progress or NO_PROGRESS).size
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT, 0o644)
    with os.fdopen(fd, "wb") as file:
        actual = os.fstat(fd).st_size
        if actual > committed:
            os.ftruncate(fd, committed)  # the tail of a write that was never committed
        start = min(actual, committed)
        file.seek(start)
        file.write(data)
        file.flush()
        os.fsync(fd)
    new_progress = replace(position, size=start + len(data))
    _write_progress(progress_path, new_progress)
    return new_progress, len(fresh)


def _write_progress(path: Path, progress: LogProgress) -> None:
    temp = path.with_name(f".{path.name}.tmp")
    with temp.open("w", encoding="utf-8") as file:
        json.dump(asdict(progress), file)
        file.flush()
        os.fsync(file.fileno())
    os.replace(temp, path)


def _read_range(path: Path, offset: int, limit: int) -> bytes:
    with contextlib.suppress(FileNotFoundError), path.open("rb") as file:
        file.seek(offset)
        return file.read(limit)
    return b""
