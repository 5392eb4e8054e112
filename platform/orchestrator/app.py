"""The build orchestrator: consumes triggers, queues builds, gives each to a builder with a free
slot, keeps build records current.

It is a small Quart app so the gateway can ask it for health; the work happens in background tasks
started with the app and stopped with it: one consumer of triggers and builders' events (which
survives a lost broker), the scheduler and what wakes it when a builder is done, the sweep of
pending triggers, and the reconcile of leases and unfinished builds.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from datetime import timedelta
from typing import Any

from quart import Quart

from gobuild.platform.bus import EventProducer, consume_forever, wait_for_topics
from gobuild.platform.config import Settings
from gobuild.platform.events import (
    TOPIC_BUILD_COMPLETIONS,
    TOPIC_BUILD_STATUS,
    TOPIC_BUILD_TRIGGERS,
    BuildTriggered,
    Event,
    utcnow,
)
from gobuild.platform.orchestrator.dispatch import Dispatcher
from gobuild.platform.orchestrator.reconcile import Reconciler
from gobuild.platform.orchestrator.scheduler import Scheduler
from gobuild.platform.service import add_task_health, start_task, stop_tasks
from gobuild.platform.stores.builds import BuildStore
from gobuild.platform.stores.claims import BuilderFleet
from gobuild.platform.stores.connection import connect_redis
from gobuild.platform.stores.outbox import ResultOutbox
from gobuild.platform.stores.projects import ProjectStore
from gobuild.platform.waiting import wait_within

log = logging.getLogger(__name__)

# Triggers still pending this long after they were recorded are queued by the sweep.
SWEEP_INTERVAL_SECONDS = 15.0
SWEEP_AGE = timedelta(seconds=10)
# The consumer group must have been joined before the app serves.
JOIN_TIMEOUT_SECONDS = 120.0


def create_app(settings: Settings) -> Quart:
    app = Quart("gobuild.orchestrator")
    tasks: set[asyncio.Task[None]] = set()

    add_task_health(app, tasks)

    @app.before_serving
    async def _start() -> None:
        await wait_for_topics(settings)
        redis = connect_redis(settings.redis_url)
        producer = EventProducer(settings, client_id="orchestrator")
        await producer.start()
        dispatcher = Dispatcher(settings, BuildStore(redis), ProjectStore(redis), producer)
        app.extensions["gobuild.orchestrator"] = (dispatcher, redis, producer)

        async def on_event(event: Event) -> None:
            if isinstance(event, BuildTriggered):
                await dispatcher.handle_trigger(event)
            else:
                await dispatcher.handle_record(event)

        fleet = BuilderFleet(redis)
        reconciler = Reconciler(dispatcher, fleet, ResultOutbox(redis))
        scheduler = Scheduler(dispatcher, fleet)

        def start(name: str, work: Coroutine[Any, Any, None]) -> None:
            start_task(tasks, f"orchestrator-{name}", work)

        # One consumer for the triggers and the builders' events: each consumer polls the broker
        # (the embedded one answers a fetch only when its wait is over), so one costs half of two.
        joined = asyncio.Event()
        start(
            "consumer",
            consume_forever(
                settings,
                [TOPIC_BUILD_TRIGGERS, TOPIC_BUILD_STATUS, TOPIC_BUILD_COMPLETIONS],
                on_event,
                group_id="orchestrator",
                client_id="orchestrator",
                joined=joined,
            ),
        )
        await wait_within(joined.wait(), JOIN_TIMEOUT_SECONDS)
        await dispatcher.sweep_pending()  # whatever was accepted while no orchestrator ran
        start("scheduler", scheduler.run_forever())
        start("results", scheduler.wake_on_results())
        start("sweep", _sweep_forever(dispatcher))
        start("reconcile", reconciler.run_forever())
        log.info("orchestrator ready")

    @app.after_serving
    async def _stop() -> None:
        await stop_tasks(tasks)
        state = app.extensions.pop("gobuild.orchestrator", None)
        if state:
            _, redis, producer = state
            await producer.stop()
            await redis.aclose()

    return app


async def _sweep_forever(dispatcher: Dispatcher) -> None:
    while True:
        await asyncio.sleep(SWEEP_INTERVAL_SECONDS)
        try:
            stale = await dispatcher.builds.pending_triggers(older_than=utcnow() - SWEEP_AGE)
            for trigger in stale:
                log.info("sweep: queueing pending trigger %s", trigger.build_id)
                await dispatcher.handle_trigger(trigger)
        except Exception:
            log.exception("sweep of pending triggers failed; retrying next round")
