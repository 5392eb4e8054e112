"""A gateway app on a real Redis and broker, driven through Quart's test client."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from typing import Any

import pytest

from gobuild.platform.bus import wait_for_topics
from gobuild.platform.config import AuthSettings, GatewaySettings, Settings
from gobuild.platform.gateway.app import create_app
from tests.gateway.support import ADMIN_PASSWORD, GITLAB_URL, JWT_SECRET, Gateway

StartGateway = Callable[..., Awaitable[Gateway]]


def auth_settings(**overrides: Any) -> AuthSettings:
    """Auth settings fixed by the test (not the environment), both providers configured."""
    values: dict[str, Any] = {
        "jwt_secret": JWT_SECRET,
        "initial_admin_password": ADMIN_PASSWORD,
        "github_client_id": "gh-client",
        "github_client_secret": "gh-secret",
        "gitlab_client_id": "gl-client",
        "gitlab_client_secret": "gl-secret",
        "gitlab_url": GITLAB_URL,
    }
    values.update(overrides)
    return AuthSettings(_env_file=None, **values)  # type: ignore[call-arg]


def gateway_settings(**overrides: Any) -> GatewaySettings:
    return GatewaySettings(_env_file=None, **overrides)  # type: ignore[call-arg]


@pytest.fixture
async def start_gateway(
    make_settings: Callable[..., Settings], redis_url: str, kafka_bootstrap: str
) -> AsyncIterator[StartGateway]:
    """Start a gateway with `auth={...}` / `gateway={...}` setting overrides (one per test)."""
    async with AsyncExitStack() as stack:

        async def start(
            *, auth: dict[str, Any] | None = None, gateway: dict[str, Any] | None = None
        ) -> Gateway:
            settings = make_settings(redis_url=redis_url, kafka_bootstrap=kafka_bootstrap)
            await wait_for_topics(settings)
            app = create_app(
                settings,
                auth_settings=auth_settings(**(auth or {})),
                gateway_settings=gateway_settings(**(gateway or {})),
            )
            test_app = await stack.enter_async_context(app.test_app())
            return Gateway(client=test_app.test_client(), settings=settings)

        yield start


@pytest.fixture
async def gateway(start_gateway: StartGateway) -> Gateway:
    return await start_gateway()
