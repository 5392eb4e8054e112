"""A storage process killed mid-upload: the uploader is told what broke, and the partial upload
file it left is removed when storage starts again. Disk errors are answered with their cause."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from storage_testing import StorageUnderTest, create_storage_app

from gobuild.platform.bus import wait_for_topics
from gobuild.platform.config import Settings
from gobuild.platform.storage_client import (
    StorageClient,
    StorageError,
    artifact_path,
    internal_headers,
)

MIB = 1024 * 1024


@dataclass(frozen=True)
class ArchiveOnDisk:
    path: Path
    sha256: str
    size: int


def start_storage(settings: Settings, cwd: Path) -> subprocess.Popen[bytes]:
    """`python -m gobuild.platform.storage` as the services run it."""
    env = {
        **os.environ,
        "GOBUILD_DATA_DIR": str(settings.data_dir),
        "GOBUILD_STORAGE_PORT": str(settings.storage_port),
        "GOBUILD_INTERNAL_TOKEN": settings.internal_token,
        "GOBUILD_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
    }
    return subprocess.Popen(
        [sys.executable, "-m", "gobuild.platform.storage"],
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


async def wait_until(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    """Poll the file system (there is nothing to be notified by) until `condition` holds."""
    async with asyncio.timeout(timeout):
        while True:
            if condition():
                return
            await asyncio.sleep(0.02)


async def wait_healthy(http: httpx.AsyncClient, settings: Settings) -> None:
    async with asyncio.timeout(30):
        while True:
            with contextlib.suppress(httpx.TransportError):
                if (await http.get(f"{settings.storage_url}/healthz")).status_code == 200:
                    return
            await asyncio.sleep(0.05)


def feed(pipe: int, size: int, idle_timeout: float = 2.0) -> None:
    """Write `size` bytes into the pipe, giving up when nobody reads any more (the reader may
    keep the pipe open after a failed upload, so a blocking write could hang forever)."""
    data = memoryview(os.urandom(size))
    last_progress = time.monotonic()
    while data and time.monotonic() - last_progress < idle_timeout:
        try:
            data = data[os.write(pipe, data[:65536]) :]
            last_progress = time.monotonic()
        except BlockingIOError:
            time.sleep(0.005)
        except BrokenPipeError:
            return


def partial_uploads(settings: Settings) -> list[Path]:
    folder = settings.artifacts_dir
    return [p for p in folder.iterdir() if p.name.endswith(".upload")] if folder.is_dir() else []


async def test_storage_killed_mid_upload_says_what_broke_and_restarts_without_the_partial_file(
    make_settings: Callable[..., Settings], kafka_bootstrap: str, tmp_path: Path
) -> None:
    settings = make_settings(kafka_bootstrap=kafka_bootstrap)
    await wait_for_topics(settings)
    # The archive comes through a pipe, so the test decides when the upload is half-way.
    pipe = tmp_path / "artifact.pipe"
    os.mkfifo(pipe)
    archive = ArchiveOnDisk(pipe, "0" * 64, 8 * MIB)
    storage = start_storage(settings, tmp_path)
    writer: int | None = None
    try:
        async with httpx.AsyncClient() as http:
            await wait_healthy(http, settings)
            upload = asyncio.create_task(
                StorageClient(http, settings).upload_artifact("b_crash", archive)
            )
            writer = await asyncio.to_thread(os.open, pipe, os.O_WRONLY)
            os.set_blocking(writer, False)
            await asyncio.to_thread(feed, writer, 2 * MIB)
            await wait_until(lambda: any(p.stat().st_size for p in partial_uploads(settings)))

            storage.kill()
            storage.wait()
            await asyncio.to_thread(feed, writer, 6 * MIB)  # the rest of the archive
            with pytest.raises(StorageError) as failure:
                await asyncio.wait_for(upload, 30)
            message = str(failure.value)
            assert message.startswith("uploading the artifact to storage failed: "), message
            detail = message.removeprefix("uploading the artifact to storage failed: ")
            assert "connection" in detail and "Error" in detail, message
            assert partial_uploads(settings), "the crash should have left a partial upload"

            storage = start_storage(settings, tmp_path)
            await wait_healthy(http, settings)
            assert partial_uploads(settings) == []
            meta = await http.get(
                settings.storage_url + artifact_path("b_crash") + "/meta",
                headers=internal_headers(settings.internal_token),
            )
            assert meta.status_code == 404
    finally:
        if writer is not None:
            os.close(writer)
        storage.kill()
        storage.wait()


async def test_leftovers_of_interrupted_uploads_are_removed_when_storage_starts(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings()
    settings.artifacts_dir.mkdir(parents=True)
    kept = {"b_1.tar.gz": b"archive", "b_1.tar.gz.sha256": b"0" * 64 + b"  b_1.tar.gz\n"}
    for name, content in kept.items():
        (settings.artifacts_dir / name).write_bytes(content)
    for name in (".b_2.k3j9x0a1.upload", ".b_1.tar.gz.sha256.tmp"):
        (settings.artifacts_dir / name).write_bytes(b"partial")

    app = create_storage_app(settings, consume_logs=False)
    async with app.test_app():
        assert sorted(p.name for p in settings.artifacts_dir.iterdir()) == sorted(kept)


async def test_upload_that_cannot_be_written_is_answered_with_the_cause(
    storage: StorageUnderTest,
) -> None:
    folder = storage.settings.artifacts_dir
    folder.rmdir()
    folder.write_text("not a folder")  # the disk refuses every write under it

    response = await storage.client.put("/artifacts/b_1", data=b"archive")

    assert response.status_code == 500
    answer = await response.get_json()
    assert answer["error"] == "artifact not stored"
    assert answer["detail"].startswith("writing the artifact of b_1 to disk failed: ")
    assert str(folder) in answer["detail"]
