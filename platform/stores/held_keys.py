"""Keys one holder owns for a while (build claims, the retention lock): only the holder may
renew or release them, checked and done in one Lua script so nobody else's lease is touched."""

from __future__ import annotations

import redis.asyncio as aioredis

_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


async def renew_if_held(redis: aioredis.Redis, key: str, holder: str, seconds: float) -> bool:
    """Extend `key` to `seconds` from now if `holder` holds it; False otherwise."""
    lease_ms = max(1, int(seconds * 1000))
    return bool(await redis.eval(_RENEW, 1, key, holder, lease_ms))  # type: ignore[misc]


async def release_if_held(redis: aioredis.Redis, key: str, holder: str) -> None:
    """Delete `key` if `holder` holds it."""
    await redis.eval(_RELEASE, 1, key, holder)  # type: ignore[misc]
