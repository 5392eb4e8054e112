"""Build logs on `build-logs`: batched, numbered, one stream per chunk, then a final chunk;
bounded in size, in line rate and in line length."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable

import pytest

from gobuild.builder_agent.container import LineSplitter
from gobuild.builder_agent.log_stream import LINE_CUT_MARK, MAX_LINE_BYTES, LogLimits, LogStreamer
from gobuild.platform.bus import EventProducer, decode_record, ensure_topics, make_consumer
from gobuild.platform.config import Settings
from gobuild.platform.events import TOPIC_BUILD_LOGS, LogChunk


@pytest.fixture
async def settings(kafka_bootstrap: str, make_settings: Callable[..., Settings]) -> Settings:
    settings = make_settings(
        kafka_bootstrap=kafka_bootstrap, log_batch_lines=3, log_flush_interval_ms=50
    )
    await ensure_topics(settings)
    return settings


def unique(name: str) -> str:
    """A build id no other test (on the shared broker) publishes logs for."""
    return f"{name}-{uuid.uuid4().hex[:8]}"


async def read_chunks(
    settings: Settings, build_id: str, count: int | None = None
) -> list[LogChunk]:
    """One build's chunks as a log reader sees them: the first `count`, or up to the final one."""
    consumer = make_consumer(settings, [TOPIC_BUILD_LOGS], None, client_id="test-reader")
    await consumer.start()
    chunks: list[LogChunk] = []
    try:
        async with asyncio.timeout(30):
            while count is None or len(chunks) < count:
                event = decode_record(await consumer.getone())
                if isinstance(event, LogChunk) and event.build_id == build_id:
                    chunks.append(event)
                    if count is None and event.final:
                        break
    finally:
        await consumer.stop()
    return chunks


async def test_chunks_are_numbered_in_order_with_one_stream_each_and_a_final_chunk(
    settings: Settings, producer: EventProducer
) -> None:
    build_id = unique("b_logs1")
    logs = LogStreamer(producer, settings, build_id=build_id, project_id="p_1", attempt=2)
    await logs.start()
    await logs.system("Cloning repo")
    for line in ("a", "b", "c", "d"):
        await logs.write("stdout", line)
    await logs.write("stderr", "warning: e")
    await logs.write("stdout", "f")
    await logs.system("Build succeeded in 1.0s")
    await logs.close()

    chunks = await read_chunks(settings, build_id, 6)

    assert [(c.seq, c.stream, c.lines, c.final) for c in chunks] == [
        (0, "system", ["Cloning repo"], False),
        (1, "stdout", ["a", "b", "c"], False),
        (2, "stdout", ["d"], False),
        (3, "stderr", ["warning: e"], False),
        (4, "stdout", ["f"], False),
        (5, "system", ["Build succeeded in 1.0s"], True),
    ]
    assert {(c.attempt, c.project_id) for c in chunks} == {(2, "p_1")}


async def test_the_result_line_given_to_close_rides_in_the_final_chunk_even_after_a_quiet_spell(
    settings: Settings, producer: EventProducer
) -> None:
    build_id = unique("b_last")
    logs = LogStreamer(producer, settings, build_id=build_id, project_id="p_1", attempt=1)
    logs.secrets.add("hunter2")
    await logs.start()
    await logs.write("stdout", "done")
    await asyncio.sleep(0.2)  # quiet for longer than the flush interval: "done" went out alone
    await logs.close(last_line="Build failed: hunter2 was wrong")

    chunks = await read_chunks(settings, build_id)

    assert [(c.seq, c.stream, c.lines, c.final) for c in chunks] == [
        (0, "stdout", ["done"], False),
        (1, "system", ["Build failed: *** was wrong"], True),
    ]


async def test_lines_are_published_within_the_flush_interval_before_close(
    settings: Settings, producer: EventProducer
) -> None:
    build_id = unique("b_logs2")
    logs = LogStreamer(producer, settings, build_id=build_id, project_id="p_1", attempt=1)
    await logs.start()
    await logs.write("stdout", "compiling")

    first = await read_chunks(settings, build_id, 1)

    assert [(c.seq, c.lines, c.final) for c in first] == [(0, ["compiling"], False)]
    await logs.close()
    everything = await read_chunks(settings, build_id, 2)
    assert [(c.seq, c.stream, c.lines, c.final) for c in everything] == [
        (0, "stdout", ["compiling"], False),
        (1, "system", [], True),
    ]


async def test_many_lines_keep_their_order_across_chunks(
    settings: Settings, producer: EventProducer
) -> None:
    build_id = unique("b_logs3")
    logs = LogStreamer(producer, settings, build_id=build_id, project_id="p_1", attempt=1)
    await logs.start()
    for i in range(100):
        await logs.write("stdout" if i % 10 else "stderr", f"line {i}")
        if i % 7 == 0:
            await asyncio.sleep(0.01)
    await logs.close()

    chunks = await read_chunks(settings, build_id)

    assert [c.seq for c in chunks] == list(range(len(chunks)))
    assert [line for c in chunks for line in c.lines] == [f"line {i}" for i in range(100)]
    assert all(len(c.lines) <= 3 for c in chunks)
    assert all(
        c.stream == ("stderr" if int(c.lines[0].split()[1]) % 10 == 0 else "stdout")
        for c in chunks
        if c.lines
    )


async def test_a_line_after_a_quiet_spell_goes_out_at_once_and_bursts_are_batched(
    make_settings: Callable[..., Settings], kafka_bootstrap: str
) -> None:
    settings = make_settings(
        kafka_bootstrap=kafka_bootstrap, log_batch_lines=100, log_flush_interval_ms=2000
    )
    await ensure_topics(settings)
    producer = EventProducer(settings, client_id="test-quiet")
    await producer.start()
    build_id = unique("b_quiet")
    logs = LogStreamer(producer, settings, build_id=build_id, project_id="p_1", attempt=1)
    await logs.start()
    try:
        await logs.write("stdout", "first")
        # Far sooner than the 2 s flush interval.
        async with asyncio.timeout(1.0):
            first = await read_chunks(settings, build_id, 1)
        assert [c.lines for c in first] == [["first"]]
        for i in range(50):
            await logs.write("stdout", f"burst {i}")
        await logs.close()
        chunks = await read_chunks(settings, build_id)
    finally:
        await producer.stop()
    assert [line for c in chunks for line in c.lines] == ["first"] + [
        f"burst {i}" for i in range(50)
    ]
    assert len(chunks) <= 4  # the burst travels in one or two chunks, then the final one


def test_the_line_rate_allows_a_burst_then_refills_and_a_spell_is_announced_once_over() -> None:
    limits = LogLimits(max_bytes=1024 * 1024, lines_per_second=2, burst=3)

    assert [limits.take_line(0.0) for _ in range(5)] == [True, True, True, False, False]
    assert limits.take_line(0.25) is False  # the bucket holds a line again only at 0.5 s
    assert limits.take_line(0.5) is True
    assert limits.take_line(0.5) is False
    assert limits.end_spell(1.0) is None  # a line was dropped half a second ago
    assert limits.end_spell(1.6) == (
        "Log rate limit: dropped 4 lines (this build printed more than 2 lines per second)"
    )
    assert limits.end_spell(5.0) is None  # once per spell
    assert limits.take_line(5.0) is True


def test_the_size_limit_truncates_once_and_drops_everything_after() -> None:
    limits = LogLimits(max_bytes=1024, lines_per_second=1000, burst=1000)

    kept = [limits.take_bytes(100) for _ in range(11)]

    assert kept == [True] * 10 + [False]
    assert limits.truncated
    assert limits.truncation_notice() == (
        "Log truncated: this build wrote more than 1 KiB; further output is dropped "
        "(the build goes on)"
    )


async def read_lines(settings: Settings, build_id: str) -> list[tuple[str, str]]:
    """The whole log of a closed build, as (stream, line)."""
    return [(c.stream, line) for c in await read_chunks(settings, build_id) for line in c.lines]


async def test_output_past_the_size_limit_is_dropped_after_one_notice_and_the_result_still_shows(
    kafka_bootstrap: str, make_settings: Callable[..., Settings], producer: EventProducer
) -> None:
    settings = make_settings(kafka_bootstrap=kafka_bootstrap, build_log_max_bytes=1024)
    build_id = unique("b_flood")
    logs = LogStreamer(producer, settings, build_id=build_id, project_id="p_1", attempt=1)
    await logs.start()
    await logs.system("$ flood")
    for i in range(1000):
        await logs.write("stdout", f"{i:04d} " + "x" * 95)  # 100 bytes
    await logs.system("Build succeeded in 1.0s")
    await logs.close()

    lines = await read_lines(settings, build_id)

    output = [line for stream, line in lines if stream == "stdout"]
    assert output == [f"{i:04d} " + "x" * 95 for i in range(10)]  # 7 + 10 * 100 <= 1024
    assert [line for _, line in lines if line.startswith("Log truncated")] == [
        "Log truncated: this build wrote more than 1 KiB; further output is dropped "
        "(the build goes on)"
    ]
    assert lines[-1] == ("system", "Build succeeded in 1.0s")


async def test_lines_over_the_rate_are_dropped_and_each_spell_ends_with_how_many(
    kafka_bootstrap: str, make_settings: Callable[..., Settings], producer: EventProducer
) -> None:
    settings = make_settings(
        kafka_bootstrap=kafka_bootstrap,
        build_log_max_lines_per_second=20,
        build_log_line_burst=5,
    )
    build_id = unique("b_rate")
    logs = LogStreamer(producer, settings, build_id=build_id, project_id="p_1", attempt=1)
    await logs.start()
    for i in range(100):
        await logs.write("stdout", f"a{i}")
    await asyncio.sleep(1.2)  # the spell is over: no line dropped for a second
    await logs.write("stdout", "after the first spell")
    for i in range(100):
        await logs.write("stdout", f"b{i}")
    await logs.close()

    lines = [line for _, line in await read_lines(settings, build_id)]

    notices = [line for line in lines if line.startswith("Log rate limit:")]
    assert len(notices) == 2
    dropped = [int(notice.split()[4]) for notice in notices]
    assert all(n.endswith("(this build printed more than 20 lines per second)") for n in notices)
    first, second = lines.index(notices[0]), lines.index(notices[1])
    kept_a = [line for line in lines[:first] if line.startswith("a")]
    kept_b = [line for line in lines[first:second] if line.startswith("b")]
    assert kept_a == [f"a{i}" for i in range(len(kept_a))] and len(kept_a) >= 5
    assert len(kept_a) + dropped[0] == 100
    assert lines[first + 1] == "after the first spell"
    assert len(kept_b) + dropped[1] == 100 and dropped[1] > 0


async def test_a_huge_line_is_cut_and_marked_and_the_next_line_is_whole(
    kafka_bootstrap: str, make_settings: Callable[..., Settings], producer: EventProducer
) -> None:
    settings = make_settings(kafka_bootstrap=kafka_bootstrap)
    build_id = unique("b_long")
    logs = LogStreamer(producer, settings, build_id=build_id, project_id="p_1", attempt=1)
    await logs.start()
    await logs.write("stdout", "é" * 100_000)  # 200 kB of UTF-8 on one line
    await logs.write("stdout", "next")
    await logs.close()

    lines = [line for _, line in await read_lines(settings, build_id)]

    assert len(lines) == 2
    assert lines[0].endswith(LINE_CUT_MARK)
    assert set(lines[0].removesuffix(LINE_CUT_MARK)) == {"é"}
    assert MAX_LINE_BYTES - 4 < len(lines[0].encode()) <= MAX_LINE_BYTES
    assert lines[1] == "next"


async def test_secret_values_are_masked_in_every_line_even_when_written_in_pieces(
    settings: Settings, producer: EventProducer
) -> None:
    build_id = unique("b_secret")
    logs = LogStreamer(producer, settings, build_id=build_id, project_id="p_1", attempt=1)
    await logs.start()
    logs.secrets.add("hunter2-token")
    logs.secrets.add("-----BEGIN KEY-----\nMIIBOgIBAAJBAKj34GkxFhD9\n-----END KEY-----")
    splitter = LineSplitter()
    # The container wrote the line in two pieces; the splitter hands over the whole line.
    for piece in (b"token=hunter2", b"-token done\n"):
        for line in splitter.feed(piece):
            await logs.write("stdout", line)
    await logs.write("stderr", "MIIBOgIBAAJBAKj34GkxFhD9")
    await logs.system("failed: hunter2-token was wrong")
    await logs.close()

    lines = [line for chunk in await read_chunks(settings, build_id) for line in chunk.lines]

    assert lines == ["token=*** done", "***", "failed: *** was wrong"]
