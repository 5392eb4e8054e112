"""Opening the Redis connection every service shares."""

from __future__ import annotations

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError

# A connection that Redis closed (it restarted) fails once and is opened again; an outage
# still surfaces within a fraction of a second instead of stalling every caller.
RECONNECT_ATTEMPTS = 2
RECONNECT_BACKOFF = ExponentialBackoff(cap=0.2, base=0.05)


def connect_redis(url: str) -> aioredis.Redis:
    """A client with string replies, bounded waits, periodic health checks, and a new
    connection (twice at most) in place of one that broke."""
    return aioredis.from_url(
        url,
        decode_responses=True,
        socket_timeout=10,
        health_check_interval=30,
        retry=Retry(
            RECONNECT_BACKOFF, RECONNECT_ATTEMPTS, supported_errors=(RedisConnectionError,)
        ),
    )
