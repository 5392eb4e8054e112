"""A build's resource samples through the API: whoever may read the build reads its CPU and
memory over time (running or finished), as does a share link of it; others get 404."""

from __future__ import annotations

from gobuild.platform.events import BuildResourceSample
from gobuild.platform.stores.connection import connect_redis
from gobuild.platform.stores.resource_samples import ResourceSampleStore
from tests.gateway.conftest import StartGateway
from tests.gateway.support import Gateway


async def record_samples(gateway: Gateway, build_id: str, project_id: str) -> None:
    redis = connect_redis(gateway.settings.redis_url)
    try:
        store = ResourceSampleStore(redis)
        for step, cpu, memory in (("install", 50.0, 10_000_000), ("build", 150.0, 20_000_000)):
            await store.append(
                BuildResourceSample(
                    build_id=build_id,
                    project_id=project_id,
                    step=step,
                    cpu_percent=cpu,
                    memory_bytes=memory,
                    memory_limit_bytes=512 * 1024 * 1024,
                )
            )
    finally:
        await redis.aclose()


async def test_readers_of_a_build_get_its_resource_samples_and_strangers_a_404(
    start_gateway: StartGateway,
) -> None:
    gateway = await start_gateway()
    people = {name: await gateway.user_headers(name) for name in ("olga", "vic", "sam")}
    site = await gateway.create_project(headers=people["olga"], name="site")
    added = await gateway.client.post(
        f"/api/projects/{site['id']}/members",
        json={"username": "vic", "role": "viewer"},
        headers=people["olga"],
    )
    assert added.status_code in (200, 201)
    build_id = await gateway.start_build(site["id"], headers=people["olga"])

    fresh = await gateway.client.get(f"/api/builds/{build_id}/resources", headers=people["vic"])
    assert fresh.status_code == 200 and await fresh.get_json() == {"samples": []}

    await record_samples(gateway, build_id, site["id"])
    for reader in ("olga", "vic"):
        response = await gateway.client.get(
            f"/api/builds/{build_id}/resources", headers=people[reader]
        )
        assert response.status_code == 200, await response.get_data(as_text=True)
        samples = (await response.get_json())["samples"]
        assert [(s["step"], s["cpu_percent"], s["memory_bytes"]) for s in samples] == [
            ("install", 50.0, 10_000_000),
            ("build", 150.0, 20_000_000),
        ]
        assert all(s["memory_limit_bytes"] == 512 * 1024 * 1024 and s["at"] for s in samples)

    stranger = await gateway.client.get(f"/api/builds/{build_id}/resources", headers=people["sam"])
    assert stranger.status_code == 404
    anonymous = await gateway.client.get(f"/api/builds/{build_id}/resources")
    assert anonymous.status_code == 401
    missing = await gateway.client.get("/api/builds/b_missing/resources", headers=people["olga"])
    assert missing.status_code == 404

    shared = await gateway.client.post(
        f"/api/builds/{build_id}/share", json={"expires_in": 600}, headers=people["olga"]
    )
    assert shared.status_code == 201, await shared.get_data(as_text=True)
    token = (await shared.get_json())["token"]
    opened = await gateway.client.get(f"/api/shared/{token}/resources")  # no credentials
    assert opened.status_code == 200, await opened.get_data(as_text=True)
    assert [s["step"] for s in (await opened.get_json())["samples"]] == ["install", "build"]
    bogus = await gateway.client.get("/api/shared/not-a-token/resources")
    assert bogus.status_code == 404
