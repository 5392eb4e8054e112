"""LogStore without the bus: ordered, exactly-once appends and push-based followers."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

from gobuild.platform.events import LogChunk
from gobuild.platform.storage.logs import LogStore


def chunk(seq: int, *lines: str, final: bool = False, attempt: int = 1) -> LogChunk:
    return LogChunk(
        build_id="b1",
        project_id="p1",
        attempt=attempt,
        seq=seq,
        stream="stdout",
        lines=list(lines),
        final=final,
    )


async def next_bytes(stream: AsyncIterator[bytes]) -> bytes:
    return await asyncio.wait_for(anext(stream), 5)


async def test_chunks_are_appended_in_order_and_redeliveries_are_skipped(tmp_path: Path) -> None:
    store = LogStore(tmp_path)
    written = await store.apply([chunk(0, "one", "two"), chunk(1, "three"), chunk(0, "one", "two")])
    assert written == 2
    assert await store.apply([chunk(1, "three"), chunk(2, "four", final=True)]) == 1

    assert (tmp_path / "b1.log").read_text() == "one\ntwo\nthree\nfour\n"
    progress = await store.progress("b1")
    assert progress is not None
    assert (progress.attempt, progress.seq, progress.complete) == (1, 2, True)
    assert json.loads((tmp_path / "b1.log.json").read_text()) == {
        "attempt": 1,
        "seq": 2,
        "size": len("one\ntwo\nthree\nfour\n"),
        "complete": True,
    }


async def test_a_restarted_store_skips_chunks_it_already_wrote(tmp_path: Path) -> None:
    await LogStore(tmp_path).apply([chunk(0, "one"), chunk(1, "two")])
    restarted = LogStore(tmp_path)
    assert await restarted.apply([chunk(0, "one"), chunk(1, "two"), chunk(2, "three")]) == 1
    assert (tmp_path / "b1.log").read_text() == "one\ntwo\nthree\n"


async def test_bytes_of_an_uncommitted_write_are_cut_before_the_next_chunk(tmp_path: Path) -> None:
    store = LogStore(tmp_path)
    await store.apply([chunk(0, "one")])
    with (tmp_path / "b1.log").open("a") as log_file:
        log_file.write("half a line from a crashed wri")  # never recorded in the sidecar
    await LogStore(tmp_path).apply([chunk(1, "two")])
    assert (tmp_path / "b1.log").read_text() == "one\ntwo\n"


async def test_a_new_attempt_continues_the_log_and_reopens_it(tmp_path: Path) -> None:
    store = LogStore(tmp_path)
    await store.apply([chunk(0, "first try", final=True)])
    await store.apply([chunk(0, "second try", attempt=2)])
    progress = await store.progress("b1")
    assert progress is not None and not progress.complete
    await store.apply([chunk(1, "done", attempt=2, final=True), chunk(0, "first try")])
    assert (tmp_path / "b1.log").read_text() == "first try\nsecond try\ndone\n"
    assert (await store.progress("b1")).complete  # type: ignore[union-attr]


async def test_a_follower_gets_existing_lines_then_new_ones_until_complete(
    tmp_path: Path,
) -> None:
    store = LogStore(tmp_path)
    await store.apply([chunk(0, "before")])
    stream = store.follow("b1", max_seconds=60)
    assert await next_bytes(stream) == b"before\n"
    assert store.follower_count("b1") == 1

    pending = asyncio.ensure_future(next_bytes(stream))
    await asyncio.sleep(0.05)
    assert not pending.done()  # nothing new yet: the follower waits
    await store.apply([chunk(1, "after")])
    assert await pending == b"after\n"

    await store.apply([chunk(2, "end", final=True)])
    assert await next_bytes(stream) == b"end\n"
    assert [part async for part in stream] == []
    assert store.follower_count("b1") == 0


async def test_a_follower_can_attach_before_the_first_line(tmp_path: Path) -> None:
    store = LogStore(tmp_path)
    assert await store.progress("b1") is None
    stream = store.follow("b1", max_seconds=60)
    pending = asyncio.ensure_future(next_bytes(stream))
    await asyncio.sleep(0.05)
    await store.apply([chunk(0, "first", final=True)])
    assert await pending == b"first\n"
    assert [part async for part in stream] == []


async def test_a_follower_of_a_build_that_never_finishes_ends_after_the_limit(
    tmp_path: Path,
) -> None:
    store = LogStore(tmp_path)
    await store.apply([chunk(0, "stuck")])
    stream = store.follow("b1", max_seconds=0.2)
    parts = await asyncio.wait_for(_collect(stream), 5)
    assert parts == [b"stuck\n"]
    assert store.follower_count("b1") == 0


async def _collect(stream: AsyncIterator[bytes]) -> list[bytes]:
    return [part async for part in stream]
