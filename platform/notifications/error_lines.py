"""Error lines in build logs: found with the one patterns module (`log_patterns`, which the
dashboard highlights with), kept as a bounded per-build excerpt for failure alerts, and
published as `BuildErrorsFound` so the dashboard can list them too."""

from __future__ import annotations

import logging

import redis.asyncio as aioredis
from aiokafka.errors import KafkaError

from gobuild.platform.bus import EventProducer
from gobuild.platform.events import TOPIC_BUILD_STATUS, BuildErrorsFound, Event, LogChunk
from gobuild.platform.log_patterns import classify_line, strip_ansi
from gobuild.platform.stores.build_notes import NOTES_TTL_SECONDS, BuildNotes
from gobuild.platform.stores.keys import key_notified_event

log = logging.getLogger(__name__)


def error_lines(lines: list[str]) -> list[str]:
    """The lines `classify_line` calls errors, without their terminal escapes."""
    return [strip_ansi(line).rstrip() for line in lines if classify_line(line) == "error"]


class ErrorLineCollector:
    """Consumes log chunks; keeps and publishes the error lines among them."""

    def __init__(self, redis: aioredis.Redis, notes: BuildNotes, producer: EventProducer) -> None:
        self.redis = redis
        self.notes = notes
        self.producer = producer

    async def handle(self, event: Event) -> None:
        if not isinstance(event, LogChunk):
            return
        found = error_lines(event.lines)
        if not found:
            return
        # A redelivered chunk must not add its lines twice.
        if not await self.redis.set(
            key_notified_event(event.event_id), "1", nx=True, ex=NOTES_TTL_SECONDS
        ):
            return
        kept = await self.notes.add_error_lines(event.build_id, event.attempt, found)
        if not kept:
            return
        step = (await self.notes.get(event.build_id)).get("step")
        errors = BuildErrorsFound(
            build_id=event.build_id,
            project_id=event.project_id,
            attempt=event.attempt,
            step=step,
            lines=kept,
        )
        try:
            await self.producer.publish(TOPIC_BUILD_STATUS, errors)
        except (KafkaError, TimeoutError, OSError) as exc:
            # The excerpt is kept for the alerts; only the dashboard's live list misses them.
            log.warning("build %s: error lines not published (%r)", event.build_id, exc)
