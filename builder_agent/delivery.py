"""Getting a build's result to the orchestrator even when the broker loses it or is down.

The result goes into the outbox in Redis before it is published; a background loop publishes
every result in the outbox again, with backoff, until the build record shows it (the
orchestrator applying it is the acknowledgement), then removes it. The outbox is shared, so a
builder delivers what a builder that died (or restarted under another id) left behind.
"""

from __future__ import annotations

import asyncio
import logging

from aiokafka.errors import KafkaError

from gobuild.builder_agent.reporter import BuildReporter, with_cancel_reason
from gobuild.platform.build_state import BuildState
from gobuild.platform.stores.builds import BuildStore
from gobuild.platform.stores.outbox import PendingResult, ResultOutbox

log = logging.getLogger(__name__)

# How often the outbox is looked at, and the backoff of one result's re-publishing.
REDELIVERY_TICK_SECONDS = 1.0
REDELIVERY_FIRST_DELAY_SECONDS = 2.0
REDELIVERY_MAX_DELAY_SECONDS = 30.0


class ResultDelivery:
    """Delivers terminal results through the outbox."""

    def __init__(self, outbox: ResultOutbox, builds: BuildStore, reporter: BuildReporter) -> None:
        self.outbox = outbox
        self.builds = builds
        self.reporter = reporter
        # build id -> (loop time of the next re-publish, the delay after that one)
        self._schedule: dict[str, tuple[float, float]] = {}

    async def deliver(self, result: PendingResult) -> None:
        """Keep the result in the outbox, then publish it; a broker failure leaves it to the
        re-delivery loop. Raises only when Redis does not take it."""
        if result.completion.state == BuildState.CANCELLED:
            # Stopped by a cancel that said why (a newer push superseded it): it says so too.
            reason = await self.builds.cancel_reason(result.build_id)
            if reason is not None:
                result = with_cancel_reason(result, reason)
        await self.outbox.put(result)
        try:
            await self.reporter.publish_result(result)
        except (KafkaError, TimeoutError, OSError) as exc:
            log.warning(
                "build %s: result not published (%r); kept in the outbox", result.build_id, exc
            )

    async def is_pending(self, build_id: str) -> bool:
        """Whether the build's result waits in the outbox (the build must not run again)."""
        return await self.outbox.holds(build_id)

    async def redeliver_due(self) -> None:
        """One pass over the outbox: drop what the record shows, publish again what is due."""
        loop = asyncio.get_running_loop()
        pending = await self.outbox.build_ids()
        for build_id in set(self._schedule) - set(pending):
            del self._schedule[build_id]
        for build_id in pending:
            result = await self.outbox.get(build_id)
            build = await self.builds.get(build_id)
            if result is None or result.settled_by(build):
                await self.outbox.remove(build_id)
                self._schedule.pop(build_id, None)
                continue
            now = loop.time()
            due, delay = self._schedule.setdefault(
                build_id, (now + REDELIVERY_FIRST_DELAY_SECONDS, REDELIVERY_FIRST_DELAY_SECONDS)
            )
            if now < due:
                continue
            next_delay = min(delay * 2, REDELIVERY_MAX_DELAY_SECONDS)
            self._schedule[build_id] = (now + delay, next_delay)
            try:
                await self.reporter.publish_result(result)
                log.info("build %s: result published again from the outbox", build_id)
            except (KafkaError, TimeoutError, OSError) as exc:
                log.warning("build %s: result still not published (%r)", build_id, exc)

    async def run_forever(self) -> None:
        while True:
            await asyncio.sleep(REDELIVERY_TICK_SECONDS)
            try:
                await self.redeliver_due()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("re-delivering results failed; retrying")
