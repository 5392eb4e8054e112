"""`python -m gobuild.builder_agent` runs until SIGTERM and then stops cleanly."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path

import redis.asyncio as aioredis

from gobuild.platform.config import Settings
from gobuild.platform.stores.keys import key_builder_heartbeat
from tests.conftest import wait_until


async def test_agent_process_beats_and_stops_on_sigterm(
    kafka_bootstrap: str,
    redis_url: str,
    redis: aioredis.Redis,
    make_settings: Callable[..., Settings],
    tmp_path: Path,
) -> None:
    settings = make_settings()
    env = {
        **os.environ,
        "GOBUILD_KAFKA_BOOTSTRAP": kafka_bootstrap,
        "GOBUILD_REDIS_URL": redis_url,
        "GOBUILD_DATA_DIR": str(settings.data_dir),
        "GOBUILD_BUILDER_ID": "process-builder",
        "GOBUILD_BUILDER_CONCURRENCY": "2",
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gobuild.builder_agent",
        cwd=tmp_path,  # no stray .env there
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        raw = await wait_until(
            lambda: redis.get(key_builder_heartbeat("process-builder")),
            timeout=60,
            interval=0.1,
            message="the builder never wrote its heartbeat",
        )
        beat = json.loads(raw)
        assert beat["id"] == "process-builder"
        assert beat["running"] == []
        assert beat["capacity"] == 2

        process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(30):
            _, stderr = await process.communicate()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()

    assert process.returncode == 0
    assert b" builder " in stderr and b"builder process-builder stopped" in stderr
    assert await redis.get(key_builder_heartbeat("process-builder")) is None
