"""The storage service as a whole: health, the internal token, JSON errors, `python -m`."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from storage_testing import create_storage_app

from gobuild.platform.config import Settings
from gobuild.platform.devstack import free_port
from gobuild.platform.storage.app import create_app
from gobuild.platform.storage_client import MissingInternalToken

TOKEN = "s3cret-internal-token"


async def test_health_is_open_and_every_other_route_needs_the_internal_token(
    make_settings: Callable[..., Settings],
) -> None:
    app = create_app(make_settings(internal_token=TOKEN), consume_logs=False)
    async with app.test_app() as test_app:
        client = test_app.test_client()
        health = await client.get("/healthz")
        assert health.status_code == 200
        assert await health.get_json() == {"status": "ok"}

        for headers in ({}, {"X-GoBuild-Internal-Token": "wrong"}):
            denied = await client.put("/artifacts/b1", data=b"x", headers=headers)
            assert denied.status_code == 401
            body = await denied.get_json()
            assert body["error"] == "unauthorized"
            assert TOKEN not in str(body)
        assert list(make_settings().artifacts_dir.glob("*")) == []

        allowed = await client.get(
            "/artifacts/b1/meta", headers={"X-GoBuild-Internal-Token": TOKEN}
        )
        assert allowed.status_code == 404
        assert (await allowed.get_json())["error"] == "artifact not found"


def test_storage_without_an_internal_token_refuses_to_start(
    make_settings: Callable[..., Settings],
) -> None:
    with pytest.raises(MissingInternalToken, match="GOBUILD_INTERNAL_TOKEN is empty"):
        create_app(make_settings(internal_token=""), consume_logs=False)


def test_python_dash_m_without_an_internal_token_exits_with_a_clear_message(
    tmp_path: Path,
) -> None:
    env = {
        **os.environ,
        "GOBUILD_DATA_DIR": str(tmp_path / "data"),
        "GOBUILD_STORAGE_PORT": str(free_port()),
        "GOBUILD_INTERNAL_TOKEN": "",
    }
    result = subprocess.run(
        [sys.executable, "-m", "gobuild.platform.storage"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        timeout=60,
    )
    assert result.returncode == 1
    stderr = result.stderr.decode()
    assert "storage cannot start: GOBUILD_INTERNAL_TOKEN is empty" in stderr
    assert "Traceback" not in stderr


async def test_unknown_routes_and_methods_answer_json(
    make_settings: Callable[..., Settings],
) -> None:
    app = create_storage_app(make_settings(), consume_logs=False)
    async with app.test_app() as test_app:
        client = test_app.test_client()
        missing = await client.get("/nothing/here")
        assert missing.status_code == 404
        assert (await missing.get_json())["error"] == "not found"
        wrong_method = await client.post("/artifacts/b1")
        assert wrong_method.status_code == 405
        assert (await wrong_method.get_json())["error"] == "method not allowed"


def wait_for_health(url: str, process: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"storage exited with {process.returncode}")
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.1)
    pytest.fail("storage did not answer /healthz")


def test_python_dash_m_serves_on_the_configured_port_and_stops_on_sigterm(
    tmp_path: Path, kafka_bootstrap: str
) -> None:
    port = free_port()
    env = {
        **os.environ,
        "GOBUILD_DATA_DIR": str(tmp_path / "data"),
        "GOBUILD_BIND_HOST": "127.0.0.1",
        "GOBUILD_STORAGE_PORT": str(port),
        "GOBUILD_KAFKA_BOOTSTRAP": kafka_bootstrap,
        "GOBUILD_INTERNAL_TOKEN": TOKEN,
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "gobuild.platform.storage"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_for_health(url, process)
        upload = httpx.put(
            f"{url}/artifacts/b1", content=b"archive", headers={"X-GoBuild-Internal-Token": TOKEN}
        )
        assert upload.status_code == 201
        assert (tmp_path / "data" / "artifacts" / "b1.tar.gz").read_bytes() == b"archive"
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=30)
    assert process.returncode == 0
    assert " INFO storage " in stderr.decode()
