"""The loop that works the delivery queue: claims what is due, sends each delivery as its own
task (at most GOBUILD_NOTIFICATION_CONCURRENCY at once), and records the outcome: delivered,
queued again after an exponential backoff, or given up after the last attempt.

A slow or dead receiver holds one task until the timeout, never the loop, the consumers or
the other receivers.
"""

from __future__ import annotations

import asyncio
import logging
import time

from redis.exceptions import RedisError

from gobuild.platform.config import NotificationSettings
from gobuild.platform.notification_records import Delivery
from gobuild.platform.notifications.outcome import retry
from gobuild.platform.notifications.sending import DeliverySender
from gobuild.platform.stores.deliveries import DeliveryQueue
from gobuild.platform.waiting import cancel_and_wait, wait_event

log = logging.getLogger(__name__)

# The queue is looked at this often even when nothing in this process queued anything (another
# instance may have).
POLL_SECONDS = 1.0
# A delivery whose worker died is claimed again this long after its attempt's timeout.
LEASE_MARGIN_SECONDS = 30.0
# Backoff between attempts: the base, doubling, at most this.
MAX_BACKOFF_SECONDS = 3600.0
# A commit status waiting for an earlier one of its build to be sent looks again this soon.
ORDERING_WAIT_SECONDS = 0.2
REDIS_RETRY_SECONDS = 1.0


def backoff_seconds(base: float, attempts: int) -> float:
    """The wait after the `attempts`-th failed attempt: base, 2 base, 4 base, ..."""
    return min(base * 2 ** (attempts - 1), MAX_BACKOFF_SECONDS)


class DeliveryWorker:
    """Works the queue until cancelled; its delivery tasks are its own and end with it."""

    def __init__(
        self, queue: DeliveryQueue, sender: DeliverySender, settings: NotificationSettings
    ) -> None:
        self.queue = queue
        self.sender = sender
        self.settings = settings
        self._tasks: set[asyncio.Task[None]] = set()
        self._changed = asyncio.Event()

    def wake(self) -> None:
        """Something was queued, or a task ended: look at the queue now."""
        self._changed.set()

    async def run_forever(self) -> None:
        try:
            while True:
                try:
                    await self._start_due()
                    wait = await self._time_to_next()
                except RedisError as exc:
                    log.warning("delivery queue unreachable (%r); retrying", exc)
                    wait = REDIS_RETRY_SECONDS
                await wait_event(self._changed, wait)
                self._changed.clear()
        finally:
            await cancel_and_wait(list(self._tasks))

    async def _start_due(self) -> None:
        free = self.settings.notification_concurrency - len(self._tasks)
        if free <= 0:
            return
        lease = self.settings.notification_timeout_seconds + LEASE_MARGIN_SECONDS
        for delivery in await self.queue.claim_due(free, lease):
            task = asyncio.create_task(self._deliver(delivery), name=f"delivery-{delivery.id}")
            self._tasks.add(task)
            task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("delivery task %s died", task.get_name(), exc_info=task.exception())
        self.wake()

    async def _time_to_next(self) -> float:
        if len(self._tasks) >= self.settings.notification_concurrency:
            return POLL_SECONDS  # a task ending wakes the loop
        due = await self.queue.next_due()
        if due is None:
            return POLL_SECONDS
        return min(max(due - time.time(), 0.0), POLL_SECONDS)

    async def _deliver(self, delivery: Delivery) -> None:
        try:
            if delivery.ordering_key is None:
                await self._attempt(delivery)
                return
            lock_seconds = self.settings.notification_timeout_seconds + LEASE_MARGIN_SECONDS
            token = await self.queue.lock_ordering(delivery.ordering_key, lock_seconds)
            if token is None:  # an earlier status of this build is being sent
                await self.queue.retry_at(delivery, time.time() + ORDERING_WAIT_SECONDS)
                return
            try:
                if await self.queue.is_superseded(delivery):
                    await self.queue.finish(delivery, "superseded")
                    log.info("delivery %s superseded by a newer commit status", delivery.id)
                    return
                await self._attempt(delivery)
            finally:
                await self.queue.unlock_ordering(delivery.ordering_key, token)
        except RedisError as exc:
            # Its lease runs out and it is claimed again.
            log.warning("delivery %s: Redis failed (%r); it will be retried", delivery.id, exc)

    async def _attempt(self, delivery: Delivery) -> None:
        try:
            outcome = await self.sender.send(delivery)
        except Exception as exc:  # a bug must not stop the retries (or retry forever)
            log.exception("delivery %s: sending failed unexpectedly", delivery.id)
            outcome = retry(f"internal error: {type(exc).__name__}")
        attempts = delivery.attempts + 1
        tried = delivery.model_copy(
            update={
                "attempts": attempts,
                "response_code": outcome.response_code,
                "error": outcome.error,
            }
        )
        where = (
            f"{delivery.kind} {delivery.receiver} ({delivery.stage}, project {delivery.project_id})"
        )
        if outcome.delivered:
            await self.queue.finish(tried, "delivered")
            log.info("delivery %s to %s delivered", delivery.id, where)
        elif outcome.retryable and attempts < self.settings.notification_max_attempts:
            wait = backoff_seconds(self.settings.notification_retry_base_seconds, attempts)
            await self.queue.retry_at(tried, time.time() + wait)
            log.info(
                "delivery %s to %s failed (%s); attempt %d in %.1f s",
                delivery.id,
                where,
                outcome.error,
                attempts + 1,
                wait,
            )
        else:
            given_up = tried.model_copy(
                update={"error": f"given up after {attempts} attempt(s): {outcome.error}"}
            )
            await self.queue.finish(given_up, "failed")
            log.warning("delivery %s to %s given up: %s", delivery.id, where, outcome.error)
