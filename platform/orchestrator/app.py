"""The build orchestrator: consumes triggers, dispatches build jobs, keeps build records current.

It is a small Quart app so the gateway can ask it for health; the work happens in background
consumers started with the app and stopped with it.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

from aiokafka import AIOKafkaConsumer
from quart import Quart

from gobuild.platform.bus import EventProducer, consume_forever, make_consumer, wait_for_topics
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
from gobuild.platform.state import BuildStore, ProjectStore, connect_redis

log = logging.getLogger(__name__)

# Triggers still pending this long after they were recorded are dispatched by the sweep.
SWEEP_INTERVAL_SECONDS = 15.0
SWEEP_AGE = timedelta(seconds=10)


def create_app(settings: Settings) -> Quart:
    app = Quart("gobuild.orchestrator")
    tasks: set[asyncio.Task[None]] = set()
    consumers: list[AIOKafkaConsumer] = []

    @app.get("/healthz")
    async def healthz() -> tuple[dict[str, object], int]:
        alive = bool(tasks) and all(not t.done() for t in tasks)
        body = {"status": "ok" if alive else "degraded", "consumers": len(consumers)}
        return body, 200 if alive else 503

    @app.before_serving
    async def _start() -> None:
        await wait_for_topics(settings)
        redis = connect_redis(settings.redis_url)
        producer = EventProducer(settings, client_id="orchestrator")
        await producer.start()
        dispatcher = Dispatcher(settings, BuildStore(redis), ProjectStore(redis), producer)
        app.extensions["gobuild.orchestrator"] = (dispatcher, redis, producer)

        async def on_trigger(event: Event) -> None:
            if isinstance(event, BuildTriggered):
                await dispatcher.handle_trigger(event)

        triggers = make_consumer(
            settings, [TOPIC_BUILD_TRIGGERS], "orchestrator", client_id="orchestrator-triggers"
        )
        records = make_consumer(
            settings,
            [TOPIC_BUILD_STATUS, TOPIC_BUILD_COMPLETIONS],
            "orchestrator-records",
            client_id="orchestrator-records",
        )
        # Joining a consumer group can take seconds (the broker waits for more members): join both
        # groups at once.
        await asyncio.gather(triggers.start(), records.start())
        consumers.extend((triggers, records))
        await dispatcher.sweep_pending()  # whatever was accepted while no orchestrator ran
        for name, coro in (
            ("triggers", consume_forever(triggers, on_trigger)),
            ("records", consume_forever(records, dispatcher.handle_record)),
            ("sweep", _sweep_forever(dispatcher)),
        ):
            task = asyncio.create_task(coro, name=f"orchestrator-{name}")
            task.add_done_callback(_log_task_end)
            tasks.add(task)
        log.info("orchestrator ready")

    @app.after_serving
    async def _stop() -> None:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        tasks.clear()
        for consumer in consumers:
            await consumer.stop()
        consumers.clear()
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
                log.info("sweep: dispatching pending trigger %s", trigger.build_id)
                await dispatcher.handle_trigger(trigger)
        except Exception:
            log.exception("sweep of pending triggers failed; retrying next round")


def _log_task_end(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("background task %s died", task.get_name(), exc_info=task.exception())
