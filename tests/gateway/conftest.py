"""A gateway app on a real Redis and broker, driven through Quart's test client."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import pytest

from gobuild.platform.bus import wait_for_topics
from gobuild.platform.config import Settings
from gobuild.platform.gateway.app import create_app
from tests.gateway.support import Gateway


@pytest.fixture
async def gateway(
    make_settings: Callable[..., Settings], redis_url: str, kafka_bootstrap: str
) -> AsyncIterator[Gateway]:
    settings = make_settings(redis_url=redis_url, kafka_bootstrap=kafka_bootstrap)
    await wait_for_topics(settings)
    app = create_app(settings)
    async with app.test_app() as test_app:
        yield Gateway(client=test_app.test_client(), settings=settings)
