"""Sliding-window rate limits in Redis and the lockout of accounts after failed logins."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
import redis.asyncio as aioredis

from gobuild.platform.auth.ratelimit import LoginGuard, RateLimiter
from gobuild.platform.config import AuthSettings, RateLimitBucket


async def test_exactly_limit_hits_pass_then_the_next_is_denied(redis: aioredis.Redis) -> None:
    limiter = RateLimiter(redis)
    results = [await limiter.hit("api", "1.2.3.4", limit=5, window=60) for _ in range(6)]
    assert [r.allowed for r in results] == [True] * 5 + [False]
    assert [r.remaining for r in results] == [4, 3, 2, 1, 0, 0]
    denied = results[-1]
    assert 0 < denied.retry_after <= 60
    assert denied.headers()["Retry-After"] == str(denied.retry_after)
    assert "Retry-After" not in results[0].headers()
    assert results[0].headers()["RateLimit-Limit"] == "5"
    assert 0 < results[0].reset_seconds <= 60


async def test_keys_and_buckets_are_counted_apart(redis: aioredis.Redis) -> None:
    limiter = RateLimiter(redis)
    assert (await limiter.hit("api", "a", limit=1, window=60)).allowed
    assert not (await limiter.hit("api", "a", limit=1, window=60)).allowed
    assert (await limiter.hit("api", "b", limit=1, window=60)).allowed
    assert (await limiter.hit("login", "a", limit=1, window=60)).allowed


async def test_hits_are_counted_atomically_under_concurrency(redis: aioredis.Redis) -> None:
    limiter = RateLimiter(redis)
    results = await asyncio.gather(
        *(limiter.hit("webhook", "github", limit=10, window=60) for _ in range(50))
    )
    assert sum(r.allowed for r in results) == 10
    assert all(r.retry_after > 0 for r in results if not r.allowed)


async def test_window_slides_so_hits_pass_again_after_it(redis: aioredis.Redis) -> None:
    limiter = RateLimiter(redis)
    assert (await limiter.hit("api", "k", limit=2, window=1)).allowed
    assert (await limiter.hit("api", "k", limit=2, window=1)).allowed
    denied = await limiter.hit("api", "k", limit=2, window=1)
    assert not denied.allowed and denied.retry_after == 1
    await asyncio.sleep(1.05)
    assert (await limiter.hit("api", "k", limit=2, window=1)).allowed


async def test_buckets_use_the_configured_limits(
    redis: aioredis.Redis, make_auth_settings: Callable[..., AuthSettings]
) -> None:
    settings = make_auth_settings(rate_limit_login_requests=2, rate_limit_login_window_seconds=30)
    limiter = RateLimiter(redis, settings)
    results = [await limiter.hit_bucket(RateLimitBucket.LOGIN, "1.2.3.4") for _ in range(3)]
    assert [r.allowed for r in results] == [True, True, False]
    assert results[0].limit == 2
    assert (await limiter.hit_bucket(RateLimitBucket.API, "1.2.3.4")).limit == 600


@pytest.fixture
def guard(redis: aioredis.Redis, make_auth_settings: Callable[..., AuthSettings]) -> LoginGuard:
    settings = make_auth_settings(login_lockout_threshold=3, login_lockout_seconds=1)
    return LoginGuard(redis, settings)


async def test_account_locks_after_threshold_failures(guard: LoginGuard) -> None:
    assert await guard.record_failure("jane") == 0
    assert await guard.record_failure("jane") == 0
    assert await guard.locked_for("jane") == 0
    assert await guard.record_failure("jane") == 1
    assert await guard.locked_for("jane") == 1
    assert await guard.locked_for("joe") == 0


async def test_success_resets_the_failure_count(guard: LoginGuard) -> None:
    await guard.record_failure("jane")
    await guard.record_failure("jane")
    await guard.record_success("jane")
    assert await guard.record_failure("jane") == 0
    assert await guard.record_failure("jane") == 0


async def test_each_lockout_in_a_row_lasts_twice_as_long(guard: LoginGuard) -> None:
    for _ in range(2):
        await guard.record_failure("jane")
    assert await guard.record_failure("jane") == 1
    await asyncio.sleep(1.1)
    assert await guard.locked_for("jane") == 0
    for _ in range(2):
        await guard.record_failure("jane")
    assert await guard.record_failure("jane") == 2
    await guard.record_success("jane")
    assert await guard.locked_for("jane") == 0


async def test_names_that_are_not_usernames_are_counted_too(guard: LoginGuard) -> None:
    name = "Robert'); DROP TABLE--" * 20
    for _ in range(3):
        await guard.record_failure(name)
    assert await guard.locked_for(name) == 1
