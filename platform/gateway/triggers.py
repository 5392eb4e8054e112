"""Accepting a build: record it durably in Redis, then hand it to the orchestrator over Kafka.

A trigger is answered 202 only once it is recorded; if the broker is down at that moment the
orchestrator's sweep of pending triggers picks it up later, so nothing accepted is lost.

Backpressure: the recorded triggers the orchestrator has not taken yet are bounded by
GOBUILD_MAX_PENDING_TRIGGERS. When that many are waiting (the orchestrator is slow or down), a
new trigger is refused with 503 and `Retry-After`, and nothing is recorded.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from aiokafka.errors import KafkaError

from gobuild.platform.build_triggers import TriggerRequest, new_build
from gobuild.platform.events import TOPIC_BUILD_TRIGGERS
from gobuild.platform.gateway.context import GatewayContext
from gobuild.platform.gateway.errors import ApiError
from gobuild.platform.records import Build, Project
from gobuild.platform.stores.keys import KEY_PENDING_TRIGGERS

# The routes build their trigger requests from here.
__all__ = ["TriggerRequest", "enqueue_build", "enqueue_builds", "queue_full_error"]

log = logging.getLogger(__name__)


def queue_full_error(ctx: GatewayContext, pending: int) -> ApiError:
    retry_after = ctx.gateway_settings.trigger_retry_after_seconds
    return ApiError(
        503,
        "build queue is full",
        f"{pending} accepted builds are waiting for the orchestrator; retry in {retry_after} "
        "seconds",
        {"Retry-After": str(retry_after)},
    )


async def enqueue_builds(
    ctx: GatewayContext, projects: Sequence[Project], trigger: TriggerRequest
) -> list[Build]:
    """Record one build per project and publish their triggers; all or none are accepted.

    Raises ApiError 503 when the pending triggers would exceed the bound.
    """
    accepted = [new_build(project, trigger) for project in projects]
    bound = ctx.gateway_settings.max_pending_triggers
    # Counting and recording under one lock keeps this process from overshooting the bound.
    async with ctx.trigger_lock:
        pending = int(await ctx.redis.zcard(KEY_PENDING_TRIGGERS))
        if pending + len(accepted) > bound:
            log.warning("refusing a trigger: %s pending triggers (bound %s)", pending, bound)
            raise queue_full_error(ctx, pending)
        for build, event in accepted:
            await ctx.builds.record_trigger(build, event)
    for build, event in accepted:
        try:
            await ctx.producer.publish(TOPIC_BUILD_TRIGGERS, event)
        except (KafkaError, TimeoutError, OSError) as exc:
            # Recorded in Redis already: the orchestrator's pending-trigger sweep will take it.
            log.warning(
                "build %s recorded but not yet published (%s); left for the sweep", build.id, exc
            )
        log.info(
            "accepted build %s of project %s (%s %s)",
            build.id,
            build.project_id,
            trigger.source,
            trigger.ref,
        )
    return [build for build, _ in accepted]


async def enqueue_build(ctx: GatewayContext, project: Project, trigger: TriggerRequest) -> Build:
    """Create the build record and publish its trigger; returns the accepted build."""
    (build,) = await enqueue_builds(ctx, [project], trigger)
    return build
