"""A project's caches in the API: listed with their size and hit rate, shown on the project,
and cleared by maintainers and owners (not viewers), in the index and in storage."""

from __future__ import annotations

from typing import Any

import httpx
import redis.asyncio as aioredis

from gobuild.platform.cache_records import CacheEntry
from gobuild.platform.events import CacheUse
from gobuild.platform.storage_client import internal_headers
from gobuild.platform.stores.builds import BuildStore
from gobuild.platform.stores.caches import CacheIndex
from tests.gateway.support import AUTH, Gateway
from tests.storage.storage_testing import create_storage_app, running_server


async def add_member(gateway: Gateway, project_id: str, username: str, role: str) -> dict[str, str]:
    headers = await gateway.user_headers(username)
    response = await gateway.client.post(
        f"/api/projects/{project_id}/members",
        json={"username": username, "role": role},
        headers=AUTH,
    )
    assert response.status_code in (200, 201), await response.get_data(as_text=True)
    return headers


async def record_caches(gateway: Gateway, project_id: str) -> None:
    """Two caches in the index and a finished build that used them (one hit, one miss)."""
    redis = aioredis.from_url(gateway.settings.redis_url, decode_responses=True)
    try:
        index = CacheIndex(redis)
        for kind, key, size in (("dependencies", "production-abc", 1000), ("layer", "k1", 500)):
            await index.record(
                CacheEntry(
                    project_id=project_id,
                    kind=kind,  # type: ignore[arg-type]
                    key=key,
                    size_bytes=size,
                    sha256="0" * 64,
                    image="docker.io/gobuild/build-base:bookworm",
                    branch="main",
                    production=True,
                    build_id="b_saver",
                )
            )
        builds = BuildStore(redis)
        [build] = await builds.list_for_project(project_id)
        await builds.update(
            build.id,
            caches=[
                CacheUse(kind="dependencies", key="production-abc", result="hit"),
                CacheUse(kind="layer", key="k1", result="miss"),
            ],
        )
    finally:
        await redis.aclose()


async def test_project_shows_its_cache_size_and_hit_rate(gateway: Gateway) -> None:
    project = await gateway.create_project()
    fresh = await (
        await gateway.client.get(f"/api/projects/{project['id']}", headers=AUTH)
    ).get_json()
    assert (fresh["cache_hit_rate"], fresh["cache_size_bytes"]) == (None, 0)
    await gateway.start_build(project["id"])
    await record_caches(gateway, project["id"])

    shown = await (
        await gateway.client.get(f"/api/projects/{project['id']}", headers=AUTH)
    ).get_json()
    listed = await (
        await gateway.client.get(f"/api/projects/{project['id']}/caches", headers=AUTH)
    ).get_json()

    assert (shown["cache_hit_rate"], shown["cache_size_bytes"]) == (0.5, 1500)
    assert listed["total_bytes"] == 1500 and listed["hit_rate"] == 0.5
    assert sorted((c["kind"], c["key"], c["size_bytes"]) for c in listed["caches"]) == [
        ("dependencies", "production-abc", 1000),
        ("layer", "k1", 500),
    ]
    assert "sha256" not in listed["caches"][0]


async def test_maintainers_clear_caches_in_the_index_and_storage_viewers_may_not(
    gateway: Gateway,
) -> None:
    settings = gateway.settings
    project = await gateway.create_project()
    await gateway.start_build(project["id"])
    await record_caches(gateway, project["id"])
    viewer = await add_member(gateway, project["id"], "vera", "viewer")
    maintainer = await add_member(gateway, project["id"], "max", "maintainer")
    path = f"/caches/{project['id']}/dependencies/production-abc"

    async with running_server(create_storage_app(settings, consume_logs=False)) as base:
        settings.storage_url = base
        async with httpx.AsyncClient(
            base_url=base, headers=internal_headers(settings.internal_token)
        ) as storage:
            assert (await storage.put(path, content=b"cached downloads")).status_code == 201

            refused = await gateway.client.delete(
                f"/api/projects/{project['id']}/caches", headers=viewer
            )
            cleared = await gateway.client.delete(
                f"/api/projects/{project['id']}/caches", headers=maintainer
            )

            assert refused.status_code == 403
            assert cleared.status_code == 200
            assert await cleared.get_json() == {"removed": 2, "freed_bytes": 16}
            assert (await storage.get(path)).status_code == 404
    listed: dict[str, Any] = await (
        await gateway.client.get(f"/api/projects/{project['id']}/caches", headers=viewer)
    ).get_json()
    assert (listed["caches"], listed["total_bytes"]) == ([], 0)


async def test_clearing_caches_while_storage_is_down_answers_503(gateway: Gateway) -> None:
    project = await gateway.create_project()
    gateway.settings.storage_url = "http://127.0.0.1:9"

    response = await gateway.client.delete(f"/api/projects/{project['id']}/caches", headers=AUTH)

    assert response.status_code == 503
    assert response.headers["Retry-After"] == "30"
