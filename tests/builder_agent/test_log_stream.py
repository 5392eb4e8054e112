"""Build logs on `build-logs`: batched, numbered, one stream per chunk, then a final chunk."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest

from gobuild.builder_agent.log_stream import LogStreamer
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


@pytest.fixture
async def producer(settings: Settings) -> AsyncIterator[EventProducer]:
    producer = EventProducer(settings, client_id="test-logs")
    await producer.start()
    yield producer
    await producer.stop()


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
    logs = LogStreamer(producer, settings, build_id="b_logs1", project_id="p_1", attempt=2)
    await logs.start()
    await logs.system("Cloning repo")
    for line in ("a", "b", "c", "d"):
        await logs.write("stdout", line)
    await logs.write("stderr", "warning: e")
    await logs.write("stdout", "f")
    await logs.system("Build succeeded in 1.0s")
    await logs.close()

    chunks = await read_chunks(settings, "b_logs1", 6)

    assert [(c.seq, c.stream, c.lines, c.final) for c in chunks] == [
        (0, "system", ["Cloning repo"], False),
        (1, "stdout", ["a", "b", "c"], False),
        (2, "stdout", ["d"], False),
        (3, "stderr", ["warning: e"], False),
        (4, "stdout", ["f"], False),
        (5, "system", ["Build succeeded in 1.0s"], True),
    ]
    assert {(c.attempt, c.project_id) for c in chunks} == {(2, "p_1")}


async def test_lines_are_published_within_the_flush_interval_before_close(
    settings: Settings, producer: EventProducer
) -> None:
    logs = LogStreamer(producer, settings, build_id="b_logs2", project_id="p_1", attempt=1)
    await logs.start()
    await logs.write("stdout", "compiling")

    first = await read_chunks(settings, "b_logs2", 1)

    assert [(c.seq, c.lines, c.final) for c in first] == [(0, ["compiling"], False)]
    await logs.close()
    everything = await read_chunks(settings, "b_logs2", 2)
    assert [(c.seq, c.stream, c.lines, c.final) for c in everything] == [
        (0, "stdout", ["compiling"], False),
        (1, "system", [], True),
    ]


async def test_many_lines_keep_their_order_across_chunks(
    settings: Settings, producer: EventProducer
) -> None:
    logs = LogStreamer(producer, settings, build_id="b_logs3", project_id="p_1", attempt=1)
    await logs.start()
    for i in range(100):
        await logs.write("stdout" if i % 10 else "stderr", f"line {i}")
        if i % 7 == 0:
            await asyncio.sleep(0.01)
    await logs.close()

    chunks = await read_chunks(settings, "b_logs3")

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
    logs = LogStreamer(producer, settings, build_id="b_quiet", project_id="p_1", attempt=1)
    await logs.start()
    try:
        await logs.write("stdout", "first")
        # Far sooner than the 2 s flush interval.
        async with asyncio.timeout(1.0):
            first = await read_chunks(settings, "b_quiet", 1)
        assert [c.lines for c in first] == [["first"]]
        for i in range(50):
            await logs.write("stdout", f"burst {i}")
        await logs.close()
        chunks = await read_chunks(settings, "b_quiet")
    finally:
        await producer.stop()
    assert [line for c in chunks for line in c.lines] == ["first"] + [
        f"burst {i}" for i in range(50)
    ]
    assert len(chunks) <= 4  # the burst travels in one or two chunks, then the final one
