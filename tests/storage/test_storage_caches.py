"""Caches in storage: streamed, hashed uploads that never replace a saved cache, downloads with
their checksum, removal of one project's caches, and names that cannot leave the folder."""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import AsyncIterator, Callable

import httpx
from storage_testing import StorageUnderTest, create_storage_app, running_server

from gobuild.platform.config import Settings
from gobuild.platform.storage_client import internal_headers

CACHE = "/caches/p_project1/dependencies/production-abc123"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


async def test_saved_cache_downloads_whole_with_its_checksum(storage: StorageUnderTest) -> None:
    data = os.urandom(300_000)
    response = await storage.client.put(
        CACHE, data=data, headers={"X-Checksum-Sha256": sha256(data)}
    )
    assert response.status_code == 201
    assert await response.get_json() == {
        "name": "production-abc123.tar.gz",
        "sha256": sha256(data),
        "size": len(data),
    }

    download = await storage.client.get(CACHE)
    assert download.status_code == 200
    assert await download.get_data() == data
    assert download.headers["X-Checksum-Sha256"] == sha256(data)


async def test_a_saved_cache_is_never_replaced(storage: StorageUnderTest) -> None:
    first, second = b"first cache", b"second cache"
    assert (await storage.client.put(CACHE, data=first)).status_code == 201

    again = await storage.client.put(CACHE, data=second)

    assert again.status_code == 412
    assert (await again.get_json())["error"] == "cache exists"
    assert await (await storage.client.get(CACHE)).get_data() == first
    folder = storage.settings.caches_dir / "p_project1" / "dependencies"
    assert sorted(p.name for p in folder.iterdir()) == [
        "production-abc123.tar.gz",
        "production-abc123.tar.gz.sha256",
    ]


async def test_two_uploads_of_one_cache_at_once_keep_one_of_them_whole(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings()
    payloads = [os.urandom(2_000_000), os.urandom(2_000_000)]

    async def slowly(data: bytes) -> AsyncIterator[bytes]:
        for start in range(0, len(data), 100_000):
            yield data[start : start + 100_000]
            await asyncio.sleep(0.01)

    headers = internal_headers(settings.internal_token)
    async with (
        running_server(create_storage_app(settings, consume_logs=False)) as base,
        httpx.AsyncClient(base_url=base, headers=headers) as client,
    ):
        answers = await asyncio.gather(
            *(client.put(CACHE, content=slowly(data)) for data in payloads)
        )
        statuses = sorted(answer.status_code for answer in answers)
        stored = (await client.get(CACHE)).content

    assert statuses == [201, 412]
    assert stored in payloads
    kept = payloads[[answer.status_code for answer in answers].index(201)]
    assert stored == kept
    leftovers = list((settings.caches_dir / "p_project1" / "dependencies").glob(".*"))
    assert leftovers == []


async def test_cache_with_wrong_checksum_is_refused_and_nothing_kept(
    storage: StorageUnderTest,
) -> None:
    response = await storage.client.put(
        CACHE, data=b"cache", headers={"X-Checksum-Sha256": sha256(b"other")}
    )

    assert response.status_code == 400
    assert (await response.get_json())["error"] == "checksum mismatch"
    assert (await storage.client.get(CACHE)).status_code == 404
    assert list((storage.settings.caches_dir / "p_project1" / "dependencies").iterdir()) == []


async def test_cache_over_the_limit_is_refused(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings(cache_max_bytes=1024 * 1024)
    app = create_storage_app(settings, consume_logs=False)
    async with app.test_app() as test_app:
        client = test_app.test_client()
        response = await client.put(CACHE, data=os.urandom(1024 * 1024 + 1))
        assert response.status_code == 413
        assert (await client.get(CACHE)).status_code == 404


async def test_clearing_a_project_removes_its_caches_only_and_counts_the_bytes(
    storage: StorageUnderTest,
) -> None:
    await storage.client.put(CACHE, data=b"x" * 100)
    await storage.client.put("/caches/p_project1/incremental/b_build1", data=b"y" * 50)
    await storage.client.put("/caches/p_other/dependencies/production-abc123", data=b"z")

    response = await storage.client.delete("/caches/p_project1")

    assert response.status_code == 200
    assert await response.get_json() == {"archives": 2, "bytes": 150}
    assert (await storage.client.get(CACHE)).status_code == 404
    assert (await storage.client.get("/caches/p_project1/incremental/b_build1")).status_code == 404
    other = await storage.client.get("/caches/p_other/dependencies/production-abc123")
    assert await other.get_data() == b"z"
    assert await (await storage.client.delete("/caches/p_project1")).get_json() == {
        "archives": 0,
        "bytes": 0,
    }


async def test_cache_names_that_could_leave_the_folder_are_refused(
    storage: StorageUnderTest,
) -> None:
    for path in (
        "/caches/p_project1/layer/key1",
        "/caches/p_project1/dependencies/..",
        "/caches/p_project1/dependencies/.hidden",
        "/caches/P%2F..%2Fx/dependencies/key1",
        "/caches/p_project1/dependencies/" + "k" * 129,
    ):
        response = await storage.client.put(path, data=b"data")
        assert response.status_code in (400, 404), path
    assert not any(storage.settings.caches_dir.rglob("*.tar.gz"))


async def test_cache_routes_need_the_internal_token(storage: StorageUnderTest) -> None:
    response = await storage.client.get(CACHE, headers={"X-GoBuild-Internal-Token": "wrong"})
    assert response.status_code == 401
