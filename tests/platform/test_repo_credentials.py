"""Repository credentials are kept encrypted with a key every gateway and builder shares."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import redis.asyncio as aioredis

from gobuild.platform.config import Settings
from gobuild.platform.repo_credentials import RepoCredentialCipher, UnreadableCredentials


async def test_a_generated_key_is_shared_through_redis_and_decrypts_what_another_encrypted(
    redis: aioredis.Redis, make_settings: Callable[..., Settings]
) -> None:
    gateway = await RepoCredentialCipher.load(redis, make_settings())
    builder = await RepoCredentialCipher.load(redis, make_settings())

    token = gateway.encrypt("x-access-token:ghp_s3cret")

    assert "ghp_s3cret" not in token
    assert builder.decrypt(token) == "x-access-token:ghp_s3cret"


async def test_credentials_of_another_key_or_altered_ones_are_unreadable(
    redis: aioredis.Redis, make_settings: Callable[..., Settings]
) -> None:
    configured = await RepoCredentialCipher.load(redis, make_settings(secret_key="k" * 32))
    generated = await RepoCredentialCipher.load(redis, make_settings())
    token = configured.encrypt("user:token")

    with pytest.raises(UnreadableCredentials, match="GOBUILD_SECRET_KEY"):
        generated.decrypt(token)
    with pytest.raises(UnreadableCredentials):
        configured.decrypt(token[:-4] + "AAAA")


def test_a_short_secret_key_is_refused(make_settings: Callable[..., Settings]) -> None:
    with pytest.raises(ValueError, match="at least 32 characters"):
        make_settings(secret_key="short")
