"""The auth package on a real Redis server, with settings fixed by the tests (not the env)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import redis.asyncio as aioredis

from gobuild.platform.auth.service import AuthService, create_auth_service
from gobuild.platform.config import AuthSettings, Settings

ADMIN_KEY = "test-admin-key"
JWT_SECRET = "a-test-secret-that-is-long-enough-for-hs256"


@pytest.fixture
def make_auth_settings() -> Callable[..., AuthSettings]:
    def make(**overrides: object) -> AuthSettings:
        values: dict[str, object] = {
            "jwt_secret": JWT_SECRET,
            "github_client_id": "gh-client",
            "github_client_secret": "gh-secret",
            "gitlab_client_id": "gl-client",
            "gitlab_client_secret": "gl-secret",
            "gitlab_url": "https://gitlab.example.com",
        }
        values.update(overrides)
        return AuthSettings(_env_file=None, **values)  # type: ignore[arg-type,call-arg]

    return make


@pytest.fixture
def auth_settings(make_auth_settings: Callable[..., AuthSettings]) -> AuthSettings:
    return make_auth_settings()


@pytest.fixture
async def auth(
    redis: aioredis.Redis, make_settings: Callable[..., Settings], auth_settings: AuthSettings
) -> AuthService:
    return await create_auth_service(redis, make_settings(admin_api_key=ADMIN_KEY), auth_settings)
