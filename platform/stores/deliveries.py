"""The durable queue of notification deliveries and each project's delivery log, in Redis.

A delivery is queued once per (build, stage, receiver): a marker written in the same
transaction refuses a second. A webhook or e-mail delivery that waits out its coalescing
window takes in the other builds reaching the same stage for the same receiver meanwhile.
Workers claim due deliveries with a lease (their due time moves past it), so the deliveries of
a worker that died are claimed again once the lease ends; nothing is lost with a process.
"""

from __future__ import annotations

import secrets
import time
from datetime import UTC, datetime

import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline

from gobuild.platform.events import utcnow
from gobuild.platform.notification_records import Delivery, DeliveryStatus
from gobuild.platform.records import new_id
from gobuild.platform.stores.held_keys import release_if_held
from gobuild.platform.stores.keys import (
    KEY_NOTIFICATION_QUEUE,
    key_notification_delivery,
    key_notification_order,
    key_notification_sending,
    key_project_notification_log,
)
from gobuild.platform.stores.optimistic import optimistic_update

# How long a (build, stage, receiver) is remembered as given, and a finished delivery kept.
SENT_MARKER_TTL_SECONDS = 7 * 24 * 3600
FINISHED_TTL_SECONDS = 14 * 24 * 3600
# The newest deliveries of a project the log keeps.
LOG_LENGTH = 500
# One message names at most this many builds; more start another.
MAX_BATCH_BUILDS = 50

# Move the due deliveries' scores past their lease and return them, atomically, so two
# workers never claim the same one.
_CLAIM = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
for _, id in ipairs(due) do redis.call('ZADD', KEYS[1], ARGV[3], id) end
return due
"""


def new_delivery_id() -> str:
    return new_id("n_", 16)


class DeliveryQueue:
    """Queue, claim, finish and list deliveries."""

    def __init__(self, redis: aioredis.Redis) -> None:
        self.redis = redis
        self._claim = redis.register_script(_CLAIM)

    async def enqueue(
        self,
        delivery: Delivery,
        *,
        sent_marker: str,
        batch_key: str | None = None,
        delay: float = 0.0,
    ) -> Delivery | None:
        """Queue `delivery`, due in `delay` seconds, unless `sent_marker` says it was queued
        before (then None). With `batch_key`, its builds join the delivery the key names
        while that one has not been tried yet (the joined delivery is returned)."""
        watched = [sent_marker, *([batch_key] if batch_key else [])]
        order_key = key_notification_order(delivery.ordering_key) if delivery.ordering_key else None
        if order_key:
            watched.append(order_key)

        async def transaction(pipe: Pipeline) -> Delivery | None:
            if await pipe.exists(sent_marker):
                return None
            joined = await self._open_batch(pipe, batch_key) if batch_key else None
            rank = int(await pipe.get(order_key) or 0) if order_key else 0
            pipe.multi()
            if joined is not None:
                joined = joined.model_copy(
                    update={"builds": [*joined.builds, *delivery.builds], "updated_at": utcnow()}
                )
                pipe.set(key_notification_delivery(joined.id), joined.model_dump_json())
                pipe.set(sent_marker, joined.id, ex=SENT_MARKER_TTL_SECONDS)
                return joined
            now = time.time()
            queued = delivery.model_copy(
                update={"next_attempt_at": datetime.fromtimestamp(now + delay, UTC)}
            )
            log_key = key_project_notification_log(delivery.project_id)
            pipe.set(key_notification_delivery(queued.id), queued.model_dump_json())
            pipe.zadd(KEY_NOTIFICATION_QUEUE, {queued.id: now + delay})
            pipe.zadd(log_key, {queued.id: now})
            pipe.zremrangebyrank(log_key, 0, -(LOG_LENGTH + 1))
            pipe.set(sent_marker, queued.id, ex=SENT_MARKER_TTL_SECONDS)
            if batch_key:
                pipe.set(batch_key, queued.id, px=max(1, int(delay * 1000)))
            if order_key and delivery.rank > rank:
                pipe.set(order_key, delivery.rank, ex=SENT_MARKER_TTL_SECONDS)
            return queued

        return await optimistic_update(
            self.redis, watched, transaction, what=f"notification {sent_marker}"
        )

    @staticmethod
    async def _open_batch(pipe: Pipeline, batch_key: str) -> Delivery | None:
        """The delivery of the batch, if it can still take builds (watched from here on)."""
        open_id = await pipe.get(batch_key)
        if not open_id:
            return None
        key = key_notification_delivery(open_id)
        await pipe.watch(key)
        raw = await pipe.get(key)
        if not raw:
            return None
        open_delivery = Delivery.model_validate_json(raw)
        if (
            open_delivery.status != "queued"
            or open_delivery.attempts
            or len(open_delivery.builds) >= MAX_BATCH_BUILDS
        ):
            return None
        return open_delivery

    async def claim_due(self, limit: int, lease_seconds: float) -> list[Delivery]:
        """Up to `limit` due deliveries, marked `sending`; each is due again after the lease
        unless it is finished or rescheduled first."""
        now = time.time()
        ids = await self._claim(
            keys=[KEY_NOTIFICATION_QUEUE], args=[now, limit, now + lease_seconds]
        )
        claimed = []
        for delivery_id in ids:
            delivery = await self._mark_sending(delivery_id)
            if delivery is None:
                await self.redis.zrem(KEY_NOTIFICATION_QUEUE, delivery_id)
            else:
                claimed.append(delivery)
        return claimed

    async def _mark_sending(self, delivery_id: str) -> Delivery | None:
        key = key_notification_delivery(delivery_id)

        async def transaction(pipe: Pipeline) -> Delivery | None:
            raw = await pipe.get(key)
            if not raw:
                return None
            delivery = Delivery.model_validate_json(raw)
            if delivery.status != "sending":  # sending: claimed again after a lease ran out
                delivery = delivery.model_copy(update={"status": "sending"})
                pipe.multi()
                pipe.set(key, delivery.model_dump_json())
            return delivery

        return await optimistic_update(self.redis, [key], transaction, what=f"delivery {key}")

    async def finish(self, delivery: Delivery, status: DeliveryStatus) -> Delivery:
        """Record the delivery as done (`delivered`, `failed`, `superseded`) and unqueue it."""
        done = delivery.model_copy(
            update={"status": status, "updated_at": utcnow(), "next_attempt_at": None}
        )
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.set(
                key_notification_delivery(done.id),
                done.model_dump_json(),
                ex=FINISHED_TTL_SECONDS,
            )
            pipe.zrem(KEY_NOTIFICATION_QUEUE, done.id)
            await pipe.execute()
        return done

    async def retry_at(self, delivery: Delivery, due: float) -> Delivery:
        """Queue the delivery again, due at `due` (unix seconds)."""
        waiting = delivery.model_copy(
            update={
                "status": "queued",
                "updated_at": utcnow(),
                "next_attempt_at": datetime.fromtimestamp(due, UTC),
            }
        )
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.set(key_notification_delivery(waiting.id), waiting.model_dump_json())
            pipe.zadd(KEY_NOTIFICATION_QUEUE, {waiting.id: due})
            await pipe.execute()
        return waiting

    async def next_due(self) -> float | None:
        """When the earliest queued delivery is due (unix seconds), None when none is queued."""
        first = await self.redis.zrange(KEY_NOTIFICATION_QUEUE, 0, 0, withscores=True)
        return float(first[0][1]) if first else None

    async def log(self, project_id: str, limit: int) -> list[Delivery]:
        """The project's deliveries, newest first."""
        ids = await self.redis.zrevrange(key_project_notification_log(project_id), 0, limit - 1)
        if not ids:
            return []
        raws = await self.redis.mget([key_notification_delivery(i) for i in ids])
        return [Delivery.model_validate_json(r) for r in raws if r]

    # Commit statuses of one build and forge: in order, the older superseded by the newer.

    async def is_superseded(self, delivery: Delivery) -> bool:
        if delivery.ordering_key is None:
            return False
        newest = await self.redis.get(key_notification_order(delivery.ordering_key))
        return newest is not None and int(newest) > delivery.rank

    async def lock_ordering(self, ordering_key: str, seconds: float) -> str | None:
        """A token if this worker may send for `ordering_key` now (until `unlock_ordering`, at
        most `seconds`); None while another delivery of it is being sent."""
        token = secrets.token_hex(8)
        key = key_notification_sending(ordering_key)
        locked = await self.redis.set(key, token, nx=True, px=max(1, int(seconds * 1000)))
        return token if locked else None

    async def unlock_ordering(self, ordering_key: str, token: str) -> None:
        await release_if_held(self.redis, key_notification_sending(ordering_key), token)
