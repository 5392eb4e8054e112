"""Ending a build that no live builder holds: cancelled before (or instead of) running, its
project gone, lost past its limits. The terminal status goes through the state machine into the
record first, then the status and a completion are published for everyone else."""

from __future__ import annotations

import logging

from aiokafka.errors import KafkaError

from gobuild.platform.build_state import BuildState, IllegalTransition
from gobuild.platform.bus import EventProducer
from gobuild.platform.events import (
    TOPIC_BUILD_COMPLETIONS,
    TOPIC_BUILD_STATUS,
    BuildCompleted,
    BuildStatusChanged,
)
from gobuild.platform.records import Build
from gobuild.platform.stores.builds import BuildStore

log = logging.getLogger(__name__)


async def end_unheld_build(
    builds: BuildStore, producer: EventProducer, build: Build, state: BuildState, reason: str
) -> Build | None:
    """End `build` in `state` for `reason`; the ended build, or None if it had ended already.

    The record is what counts: an event the broker does not take is logged, not raised.
    """
    status = BuildStatusChanged(
        build_id=build.id,
        project_id=build.project_id,
        state=state,
        number=build.number,
        reason=reason,
    )
    try:
        ended = await builds.apply_status(status)
    except IllegalTransition:
        return None  # it ended (or moved) in between
    if ended is None:
        return None
    completion = BuildCompleted(
        build_id=build.id,
        project_id=build.project_id,
        state=state,
        duration_seconds=ended.duration_seconds or 0.0,
        commit_sha=ended.commit_sha,
        error=reason,
    )
    for topic, event in ((TOPIC_BUILD_STATUS, status), (TOPIC_BUILD_COMPLETIONS, completion)):
        try:
            await producer.publish(topic, event)
        except (KafkaError, TimeoutError, OSError) as exc:
            log.warning(
                "build %s ended %s, but %s was not published: %r", build.id, state, topic, exc
            )
    log.info("build %s ended %s: %s", build.id, state.value, reason)
    return ended
