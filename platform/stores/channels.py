"""Following a Redis pub/sub channel for as long as a service runs."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import redis.asyncio as aioredis

log = logging.getLogger(__name__)

RESUBSCRIBE_MIN_SECONDS = 0.5
RESUBSCRIBE_MAX_SECONDS = 10.0


async def follow_channel(
    redis: aioredis.Redis, channel: str, on_message: Callable[[str], object], what: str
) -> None:
    """Call `on_message` with each message published on `channel` until cancelled. A lost
    connection is logged (as `what`) and subscribed again with backoff; what was published
    meanwhile is not heard, so each user of a channel also looks for its news another way."""
    delay = RESUBSCRIBE_MIN_SECONDS
    while True:
        try:
            pubsub = redis.pubsub()
            try:
                await pubsub.subscribe(channel)
                delay = RESUBSCRIBE_MIN_SECONDS
                while True:
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                    if message and message.get("type") == "message":
                        on_message(str(message["data"]))
            finally:
                await pubsub.aclose()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("%s failed (%s); resubscribing in %.1fs", what, exc, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, RESUBSCRIBE_MAX_SECONDS)
