"""Artifacts: streamed upload with checksum, download with headers, metadata, limits."""

from __future__ import annotations

import hashlib
import os
from collections.abc import AsyncIterator, Callable

import httpx
from storage_testing import StorageUnderTest, create_storage_app, running_server

from gobuild.platform.config import Settings
from gobuild.platform.storage_client import internal_headers


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


async def test_uploaded_artifact_downloads_with_same_bytes_and_checksum_headers(
    storage: StorageUnderTest, site_archive: bytes
) -> None:
    response = await storage.client.put("/artifacts/build-1", data=site_archive)
    assert response.status_code == 201
    expected = {"name": "build-1.tar.gz", "sha256": sha256(site_archive), "size": len(site_archive)}
    assert await response.get_json() == expected

    download = await storage.client.get("/artifacts/build-1")
    assert download.status_code == 200
    assert await download.get_data() == site_archive
    assert download.headers["Content-Type"] == "application/gzip"
    assert download.headers["Content-Length"] == str(len(site_archive))
    assert download.headers["X-Checksum-Sha256"] == sha256(site_archive)
    assert download.headers["Content-Disposition"] == "attachment; filename=build-1.tar.gz"

    meta = await storage.client.get("/artifacts/build-1/meta")
    assert await meta.get_json() == expected
    checksum_file = storage.settings.artifacts_dir / "build-1.tar.gz.sha256"
    assert checksum_file.read_text() == f"{sha256(site_archive)}  build-1.tar.gz\n"
    assert sorted(p.name for p in storage.settings.artifacts_dir.iterdir()) == [
        "build-1.tar.gz",
        "build-1.tar.gz.sha256",
    ]


async def test_upload_with_matching_checksum_header_is_accepted(
    storage: StorageUnderTest, site_archive: bytes
) -> None:
    response = await storage.client.put(
        "/artifacts/build-2",
        data=site_archive,
        headers={"X-Checksum-Sha256": sha256(site_archive).upper()},
    )
    assert response.status_code == 201
    assert (await response.get_json())["sha256"] == sha256(site_archive)


async def test_upload_with_wrong_checksum_is_rejected_and_nothing_is_stored(
    storage: StorageUnderTest, site_archive: bytes
) -> None:
    wrong = sha256(b"something else")
    response = await storage.client.put(
        "/artifacts/build-3", data=site_archive, headers={"X-Checksum-Sha256": wrong}
    )
    assert response.status_code == 400
    assert await response.get_json() == {
        "error": "checksum mismatch",
        "detail": {"expected": wrong, "actual": sha256(site_archive)},
    }
    assert list(storage.settings.artifacts_dir.iterdir()) == []
    missing = await storage.client.get("/artifacts/build-3")
    assert missing.status_code == 404
    assert (await missing.get_json())["error"] == "artifact not found"


async def test_upload_with_malformed_checksum_header_is_rejected(
    storage: StorageUnderTest, site_archive: bytes
) -> None:
    response = await storage.client.put(
        "/artifacts/build-4", data=site_archive, headers={"X-Checksum-Sha256": "abc"}
    )
    assert response.status_code == 400
    assert (await response.get_json())["error"] == "invalid checksum"


async def test_invalid_build_id_is_rejected(storage: StorageUnderTest) -> None:
    for method, path in [
        ("PUT", "/artifacts/Build.1"),
        ("GET", "/artifacts/UPPER"),
        ("GET", "/artifacts/" + "a" * 65 + "/meta"),
    ]:
        response = await storage.client.open(path, method=method, data=b"x")
        assert response.status_code == 400, path
        body = await response.get_json()
        assert body["error"] == "invalid build id"
        assert "[a-z0-9_-]{1,64}" in body["detail"]


async def test_missing_artifact_meta_is_404_json(storage: StorageUnderTest) -> None:
    response = await storage.client.get("/artifacts/nothing/meta")
    assert response.status_code == 404
    assert await response.get_json() == {
        "error": "artifact not found",
        "detail": "build 'nothing' has no artifact",
    }


async def test_reupload_replaces_the_artifact_and_its_checksum(storage: StorageUnderTest) -> None:
    await storage.client.put("/artifacts/build-5", data=b"first")
    await storage.client.put("/artifacts/build-5", data=b"second version")
    meta = await (await storage.client.get("/artifacts/build-5/meta")).get_json()
    assert meta == {"name": "build-5.tar.gz", "sha256": sha256(b"second version"), "size": 14}


async def test_range_and_conditional_requests_on_an_artifact(storage: StorageUnderTest) -> None:
    data = bytes(range(256)) * 4
    await storage.client.put("/artifacts/build-6", data=data)

    partial = await storage.client.get("/artifacts/build-6", headers={"Range": "bytes=10-19"})
    assert partial.status_code == 206
    assert await partial.get_data() == data[10:20]
    assert partial.headers["Content-Range"] == f"bytes 10-19/{len(data)}"

    cached = await storage.client.get(
        "/artifacts/build-6", headers={"If-None-Match": f'"{sha256(data)}"'}
    )
    assert cached.status_code == 304


async def test_deleted_artifact_is_gone(storage: StorageUnderTest) -> None:
    await storage.client.put("/artifacts/build-7", data=b"bytes")
    response = await storage.client.delete("/artifacts/build-7")
    assert response.status_code == 204
    assert (await storage.client.get("/artifacts/build-7")).status_code == 404
    assert list(storage.settings.artifacts_dir.iterdir()) == []
    assert (await storage.client.delete("/artifacts/build-7")).status_code == 204


async def generate(data: bytes, chunk: int) -> AsyncIterator[bytes]:
    for start in range(0, len(data), chunk):
        yield data[start : start + chunk]


async def test_large_chunked_upload_over_a_real_server_streams_in_and_out(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings()
    data = os.urandom(24 * 1024 * 1024)  # over Quart's default 16 MiB body limit
    app = create_storage_app(settings, consume_logs=False)
    headers = internal_headers(settings.internal_token)
    async with (
        running_server(app) as base_url,
        httpx.AsyncClient(base_url=base_url, headers=headers, timeout=60) as client,
    ):
        response = await client.put(
            "/artifacts/big",
            content=generate(data, 256 * 1024),
            headers={"X-Checksum-Sha256": sha256(data)},
        )
        assert response.status_code == 201, response.text
        assert response.json() == {"name": "big.tar.gz", "sha256": sha256(data), "size": len(data)}

        head = await client.head("/artifacts/big")
        assert head.status_code == 200
        assert head.content == b""
        assert head.headers["content-length"] == str(len(data))
        assert head.headers["x-checksum-sha256"] == sha256(data)

        hasher = hashlib.sha256()
        size = 0
        async with client.stream("GET", "/artifacts/big") as download:
            assert download.headers["content-length"] == str(len(data))
            async for chunk in download.aiter_bytes():
                hasher.update(chunk)
                size += len(chunk)
        assert (size, hasher.hexdigest()) == (len(data), sha256(data))


async def test_upload_over_the_size_limit_is_rejected_and_nothing_is_kept(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings()
    app = create_storage_app(settings, consume_logs=False, max_artifact_bytes=1024 * 1024)
    data = os.urandom(3 * 1024 * 1024)
    async with app.test_app() as test_app:
        client = test_app.test_client()
        declared = await client.put("/artifacts/too-big", data=data)
        assert declared.status_code == 413
        assert (await declared.get_json())["error"] == "artifact too large"

        # Without a Content-Length the limit applies to the bytes actually received.
        async with client.request("/artifacts/too-big", method="PUT") as connection:
            for start in range(0, len(data), 64 * 1024):
                await connection.send(data[start : start + 64 * 1024])
            await connection.send_complete()
        chunked = await connection.as_response()
        assert chunked.status_code == 413
        assert await chunked.get_json() == {
            "error": "artifact too large",
            "detail": "the limit is 1048576 bytes",
        }
    assert list(settings.artifacts_dir.iterdir()) == []
