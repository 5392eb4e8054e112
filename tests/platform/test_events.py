"""The Kafka wire contract: events round-trip, and bad messages are recognised as such."""

from __future__ import annotations

import pytest

from gobuild.platform.events import (
    BuildConfig,
    BuildRequested,
    LogChunk,
    MalformedEvent,
    encode_event,
    parse_event,
)


def test_events_round_trip_through_json_with_their_type_and_version() -> None:
    request = BuildRequested(
        build_id="b_1",
        project_id="p_1",
        project_name="site",
        number=3,
        source="github",
        repo_url="https://example.com/site.git",
        ref="refs/heads/main",
        branch="main",
        commit_sha="a" * 40,
        production=True,
        config=BuildConfig(image="img", timeout_seconds=60, memory_mb=256, cpus=1, pids_limit=64),
    )
    parsed = parse_event(encode_event(request))
    assert parsed == request
    assert parsed.type == "build.requested" and parsed.version == 1
    assert request.key() == b"b_1"


@pytest.mark.parametrize(
    "raw",
    [
        b"not json",
        b'{"type": "build.unknown", "build_id": "b"}',
        b'{"type": "build.log", "build_id": "b", "project_id": "p", "seq": -1,'
        b' "stream": "stdout", "lines": []}',
        b' "stream": "stdout", "lines": []}',
        b'{"type": "build.status", "build_id": "b", "project_id": "p", "state": "exploded"}',
        b"[]",
    ],
)
def test_malformed_or_unknown_messages_raise_malformed_event(raw: bytes) -> None:
    with pytest.raises(MalformedEvent):
        parse_event(raw)


def test_log_chunks_keep_their_lines_and_sequence() -> None:
    chunk = LogChunk(build_id="b", project_id="p", seq=4, stream="stderr", lines=["a", "b"])
    assert parse_event(encode_event(chunk)) == chunk
