"""What the API says and does when builders or the broker are lost: a cancel of a build that
no live builder holds ends it at once, and /readyz reports a broker without its topics."""

from __future__ import annotations

from collections.abc import Callable

import redis.asyncio as aioredis

from gobuild.platform.build_state import BuildState
from gobuild.platform.config import Settings
from gobuild.platform.events import (
    TOPIC_BUILD_COMPLETIONS,
    TOPIC_BUILD_STATUS,
    BuildCompleted,
    BuildStatusChanged,
)
from gobuild.platform.gateway.app import create_app
from gobuild.platform.stores.builds import BuildStore
from gobuild.platform.stores.claims import BuildClaims
from gobuild.platform.stores.keys import key_build_claim
from tests.gateway.conftest import auth_settings, gateway_settings
from tests.gateway.support import AUTH, Gateway
from tests.kafka_reading import read_events


async def running_on(redis: aioredis.Redis, build_id: str, project_id: str, builder: str) -> None:
    store = BuildStore(redis)
    for state in (BuildState.DISPATCHED, BuildState.RUNNING):
        await store.apply_status(
            BuildStatusChanged(
                build_id=build_id, project_id=project_id, state=state, builder_id=builder
            )
        )
    await redis.set(key_build_claim(build_id), builder, ex=30)


async def test_cancel_of_a_build_a_live_builder_runs_is_left_to_that_builder(
    gateway: Gateway, redis: aioredis.Redis
) -> None:
    project = await gateway.create_project()
    build_id = await gateway.start_build(project["id"])
    await running_on(redis, build_id, project["id"], "live-builder")
    await BuildClaims(redis, "live-builder").beat({"running": [build_id], "capacity": 1})

    response = await gateway.client.post(f"/api/builds/{build_id}/cancel", headers=AUTH)

    assert response.status_code == 202
    assert (await response.get_json())["state"] == "running"
    store = BuildStore(redis)
    assert await store.cancel_requested(build_id)  # the builder stops it
    assert (await store.get(build_id)).state == BuildState.RUNNING  # type: ignore[union-attr]


async def test_cancel_of_a_running_build_whose_builder_is_gone_ends_it_and_says_so(
    gateway: Gateway, redis: aioredis.Redis
) -> None:
    project = await gateway.create_project()
    build_id = await gateway.start_build(project["id"])
    await running_on(redis, build_id, project["id"], "gone-builder")  # no heartbeat

    response = await gateway.client.post(f"/api/builds/{build_id}/cancel", headers=AUTH)

    assert response.status_code == 202
    assert (await response.get_json())["state"] == "cancelled"
    shown = await (await gateway.client.get(f"/api/builds/{build_id}", headers=AUTH)).get_json()
    assert shown["state"] == "cancelled"
    assert shown["reason"] == "cancelled; no builder was running it"
    assert shown["finished_at"] is not None
    events = await read_events(gateway.settings, [TOPIC_BUILD_STATUS, TOPIC_BUILD_COMPLETIONS], 2)
    mine = [e for e in events if getattr(e, "build_id", None) == build_id]
    assert {(type(e), e.state) for e in mine} == {  # type: ignore[attr-defined]
        (BuildStatusChanged, BuildState.CANCELLED),
        (BuildCompleted, BuildState.CANCELLED),
    }
    again = await gateway.client.post(f"/api/builds/{build_id}/cancel", headers=AUTH)
    assert again.status_code == 409


async def test_readyz_says_the_broker_is_down_while_its_topics_are_missing_then_recovers(
    make_settings: Callable[..., Settings], redis_url: str, fresh_kafka_bootstrap: str
) -> None:
    # A broker that came back without its data: it answers, but has no topic.
    settings = make_settings(redis_url=redis_url, kafka_bootstrap=fresh_kafka_bootstrap)
    app = create_app(settings, auth_settings=auth_settings(), gateway_settings=gateway_settings())
    async with app.test_app() as test_app:
        client = test_app.test_client()

        first = await client.get("/readyz")

        assert first.status_code == 503
        kafka = (await first.get_json())["checks"]["kafka"]
        assert kafka.startswith("topics missing: build-triggers, build-requests"), kafka
        # The check that found them missing created them: the next one finds the broker whole.
        second = await client.get("/readyz")
        assert (await second.get_json())["checks"]["kafka"] == "ok"
