"""Rate limits (sliding window in Redis) and the login lockout of accounts under attack.

Both run as one Lua script per call, so concurrent requests on any number of gateway
processes are counted exactly, and use the Redis server's clock, so they agree on time.
"""

from __future__ import annotations

import hashlib
import math
import uuid
from dataclasses import dataclass

import redis.asyncio as aioredis

from gobuild.platform.auth.users import USERNAME_PATTERN
from gobuild.platform.config import AuthSettings, RateLimitBucket
from gobuild.platform.stores import keys

# Sliding-window log: one sorted-set member per allowed hit, scored by its time in ms.
# KEYS: the window. ARGV: window ms, limit, unique member suffix.
# Returns {allowed, remaining, ms until a slot frees (reset), ms to wait if denied}.
_SLIDING_WINDOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local window = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
local count = redis.call('ZCARD', KEYS[1])
local allowed = 0
if count < limit then
  redis.call('ZADD', KEYS[1], now, now .. '-' .. ARGV[3])
  redis.call('PEXPIRE', KEYS[1], window)
  count = count + 1
  allowed = 1
end
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
local reset = 0
if oldest[2] then reset = tonumber(oldest[2]) + window - now end
local retry = 0
if allowed == 0 then retry = reset end
return {allowed, limit - count, reset, retry}
"""

# Count a failed login; at the threshold, lock the account for base * 2^(level-1) seconds
# (capped), where level counts lockouts in a row, and start counting afresh.
# KEYS: failures, lock, level. ARGV: threshold, failure window, base lock, max lock.
_LOGIN_FAILURE = """
local failures = redis.call('INCR', KEYS[1])
if failures == 1 then redis.call('EXPIRE', KEYS[1], ARGV[2]) end
if failures < tonumber(ARGV[1]) then return 0 end
local level = redis.call('INCR', KEYS[3])
local seconds = math.min(tonumber(ARGV[3]) * 2 ^ (level - 1), tonumber(ARGV[4]))
seconds = math.floor(seconds)
redis.call('SET', KEYS[2], '1', 'EX', seconds)
redis.call('EXPIRE', KEYS[3], math.max(seconds * 2, tonumber(ARGV[2])))
redis.call('DEL', KEYS[1])
return seconds
"""


@dataclass(frozen=True)
class RateLimitResult:
    """The outcome of one hit, with what the `RateLimit-*` / `Retry-After` headers need."""

    allowed: bool
    limit: int
    remaining: int
    reset_seconds: int
    retry_after: int

    def headers(self) -> dict[str, str]:
        headers = {
            "RateLimit-Limit": str(self.limit),
            "RateLimit-Remaining": str(self.remaining),
            "RateLimit-Reset": str(self.reset_seconds),
        }
        if not self.allowed:
            headers["Retry-After"] = str(self.retry_after)
        return headers


class RateLimiter:
    """At most `limit` hits per `window` seconds for each (bucket, key)."""

    def __init__(self, redis: aioredis.Redis, settings: AuthSettings | None = None) -> None:
        self.redis = redis
        self.settings = settings

    async def hit(self, bucket: str, key: str, limit: int, window: int) -> RateLimitResult:
        """Count one hit unless the window is full; a denied hit is not counted."""
        allowed, remaining, reset_ms, retry_ms = await self.redis.eval(
            _SLIDING_WINDOW,
            1,
            keys.key_rate_limit(str(bucket), key),
            window * 1000,
            limit,
            uuid.uuid4().hex,
        )
        return RateLimitResult(
            allowed=bool(allowed),
            limit=limit,
            remaining=max(int(remaining), 0),
            reset_seconds=math.ceil(int(reset_ms) / 1000),
            retry_after=max(math.ceil(int(retry_ms) / 1000), 1) if not allowed else 0,
        )

    async def hit_bucket(self, bucket: RateLimitBucket, key: str) -> RateLimitResult:
        """`hit` with the limit and window configured for `bucket`."""
        if self.settings is None:
            raise RuntimeError("RateLimiter.hit_bucket needs the AuthSettings")
        limit, window = self.settings.rate_limit(bucket)
        return await self.hit(bucket.value, key, limit, window)


def _account(username: str) -> str:
    """The key part for an account; input that is not a valid username is hashed."""
    name = username.strip().lower()
    if USERNAME_PATTERN.fullmatch(name):
        return name
    return "h-" + hashlib.sha256(name.encode()).hexdigest()[:32]


class LoginGuard:
    """Locks an account after repeated failed logins; each lockout in a row lasts twice as long.

    Any name is counted, existing or not, so the lock does not reveal which accounts exist.
    """

    def __init__(self, redis: aioredis.Redis, settings: AuthSettings) -> None:
        self.redis = redis
        self.settings = settings

    async def locked_for(self, username: str) -> int:
        """Seconds the account stays locked (0: not locked). Check before verifying a password."""
        ttl = await self.redis.ttl(keys.key_login_lock(_account(username)))
        return max(int(ttl), 0)

    async def record_failure(self, username: str) -> int:
        """Count a failed login; returns the lock in seconds it caused (0: not locked yet)."""
        account = _account(username)
        seconds = await self.redis.eval(
            _LOGIN_FAILURE,
            3,
            keys.key_login_failures(account),
            keys.key_login_lock(account),
            keys.key_login_lock_level(account),
            self.settings.login_lockout_threshold,
            self.settings.login_failure_window_seconds,
            self.settings.login_lockout_seconds,
            self.settings.login_lockout_max_seconds,
        )
        return int(seconds)

    async def record_success(self, username: str) -> None:
        """A successful login forgets the failures and the lockout history."""
        account = _account(username)
        await self.redis.delete(
            keys.key_login_failures(account),
            keys.key_login_lock(account),
            keys.key_login_lock_level(account),
        )
