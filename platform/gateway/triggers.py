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
from dataclasses import dataclass

from aiokafka.errors import KafkaError

from gobuild.platform.events import TOPIC_BUILD_TRIGGERS, BuildTriggered, TriggerSource
from gobuild.platform.gateway.context import GatewayContext
from gobuild.platform.gateway.errors import ApiError
from gobuild.platform.records import Build, Project, new_id
from gobuild.platform.stores.keys import KEY_PENDING_TRIGGERS

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TriggerRequest:
    source: TriggerSource
    ref: str
    branch: str | None
    tag: str | None = None
    commit_sha: str | None = None
    commit_message: str | None = None
    author: str | None = None
    delivery_id: str | None = None


# What a trigger event repeats of the build record it announces.
_TRIGGER_FIELDS = {
    "project_id",
    "source",
    "repo_url",
    "ref",
    "branch",
    "tag",
    "commit_sha",
    "commit_message",
    "author",
}


def _build_and_event(project: Project, trigger: TriggerRequest) -> tuple[Build, BuildTriggered]:
    build = Build(
        id=new_id("b_"),
        project_id=project.id,
        source=trigger.source,
        repo_url=project.repo_url,
        ref=trigger.ref,
        branch=trigger.branch,
        tag=trigger.tag,
        commit_sha=trigger.commit_sha,
        commit_message=trigger.commit_message,
        author=trigger.author,
        production=trigger.branch is not None and trigger.branch == project.production_branch,
    )
    event = BuildTriggered(
        build_id=build.id,
        delivery_id=trigger.delivery_id,
        **build.model_dump(include=_TRIGGER_FIELDS),
    )
    return build, event


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
    accepted = [_build_and_event(project, trigger) for project in projects]
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
