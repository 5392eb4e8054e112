"""One viewer's log: the stored backlog, then live chunks, without a gap or a repeat at the seam,
whatever order the chunks and storage's writes come in."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import httpx
import pytest

from gobuild.platform.events import LogChunk
from gobuild.ui import live_log
from gobuild.ui.console_lines import ConsoleLine
from gobuild.ui.live_log import LogFeed, follows
from tests.conftest import wait_until


class Storage:
    """The stored log as storage serves it: the lines of the chunks it wrote, and their
    position in `X-Log-Position`."""

    def __init__(self) -> None:
        self.chunks: list[LogChunk] = []

    def write(self, *chunks: LogChunk) -> None:
        self.chunks.extend(chunks)

    @contextlib.asynccontextmanager
    async def open_log(self) -> AsyncIterator[httpx.Response]:
        headers = {"X-Log-Complete": "false"}
        if self.chunks:
            last = self.chunks[-1]
            headers["X-Log-Position"] = f"{last.attempt}:{last.seq}"
        text = "".join(line + "\n" for chunk in self.chunks for line in chunk.lines)
        yield httpx.Response(200, headers=headers, content=text.encode())


class Page:
    def __init__(self) -> None:
        self.lines: list[ConsoleLine] = []
        self.errors: list[ConsoleLine] = []

    def replace_lines(self, lines: list[ConsoleLine], total: int) -> None:
        self.lines = list(lines)

    def append_lines(self, lines: list[ConsoleLine]) -> None:
        self.lines.extend(lines)

    def errors_changed(self, errors: list[ConsoleLine]) -> None:
        self.errors = errors

    @property
    def shown(self) -> list[tuple[int, str]]:
        return [(line.number, line.text) for line in self.lines]


def chunk(seq: int, *lines: str, attempt: int = 1) -> LogChunk:
    return LogChunk(
        build_id="b_1",
        project_id="p_1",
        attempt=attempt,
        seq=seq,
        stream="stdout",
        lines=list(lines),
    )


def numbered(*texts: str) -> list[tuple[int, str]]:
    return list(enumerate(texts, start=1))


def test_a_chunk_follows_the_next_seq_or_the_start_of_a_later_attempt() -> None:
    assert follows(None, (1, 0)) and follows((1, 4), (1, 5)) and follows((1, 4), (2, 0))
    assert not follows(None, (1, 1)) and not follows((1, 4), (1, 6))
    assert not follows((2, 0), (1, 1))


async def test_live_chunks_the_backlog_holds_are_skipped_and_the_next_ones_numbered_on() -> None:
    storage, page = Storage(), Page()
    storage.write(chunk(0, "one", "two"), chunk(1, "error: three"))
    feed = LogFeed(storage.open_log, page)

    await feed.load_backlog()
    feed.add_chunks([chunk(0, "one", "two"), chunk(1, "error: three"), chunk(2, "four")])
    feed.add_chunk(chunk(2, "four"))

    assert page.shown == numbered("one", "two", "error: three", "four")
    assert [(line.number, line.text) for line in page.errors] == [(3, "error: three")]


async def test_a_chunk_before_its_predecessor_waits_for_it() -> None:
    storage, page = Storage(), Page()
    storage.write(chunk(0, "a"))
    feed = LogFeed(storage.open_log, page)
    await feed.load_backlog()

    feed.add_chunk(chunk(2, "c"))
    assert page.shown == numbered("a")
    feed.add_chunk(chunk(1, "b"))

    assert page.shown == numbered("a", "b", "c")
    feed.close()


async def test_a_missing_chunk_is_read_from_storage(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(live_log, "GAP_WAIT_SECONDS", 0.05)
    storage, page = Storage(), Page()
    storage.write(chunk(0, "a"))
    feed = LogFeed(storage.open_log, page)
    await feed.load_backlog()

    # Storage wrote chunk 1 after the page read it; the page consumed it before it watched.
    storage.write(chunk(1, "b1", "b2"))
    feed.add_chunk(chunk(2, "c"))

    await wait_until(lambda: len(page.lines) == 4, timeout=5)
    assert page.shown == numbered("a", "b1", "b2", "c")
    feed.add_chunk(chunk(1, "b1", "b2"))
    assert page.shown == numbered("a", "b1", "b2", "c")


async def test_a_retried_build_goes_on_with_the_next_attempt() -> None:
    storage, page = Storage(), Page()
    storage.write(chunk(0, "first try"))
    feed = LogFeed(storage.open_log, page)
    await feed.load_backlog()

    feed.add_chunk(chunk(0, "second try", attempt=2))

    assert page.shown == numbered("first try", "second try")


async def test_only_the_tail_is_rendered_and_earlier_lines_are_read_on_demand() -> None:
    storage, page = Storage(), Page()
    storage.write(chunk(0, *(f"line {n}" for n in range(1, 101))))
    feed = LogFeed(storage.open_log, page, tail_lines=10)

    await feed.load_backlog()

    assert page.shown == [(n, f"line {n}") for n in range(91, 101)]
    earlier = await feed.read_lines(81, 90)
    assert [(line.number, line.text) for line in earlier] == [
        (n, f"line {n}") for n in range(81, 91)
    ]


async def test_a_carriage_return_stays_inside_its_line() -> None:
    storage, page = Storage(), Page()
    storage.write(chunk(0, "10%\r100%", "done"))
    feed = LogFeed(storage.open_log, page)

    await feed.load_backlog()

    assert page.shown == numbered("100%", "done")
