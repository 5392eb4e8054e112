"""Accepting a build: record it durably in Redis, then hand it to the orchestrator over Kafka.

A trigger is answered 202 only once it is recorded; if the broker is down at that moment the
orchestrator's sweep of pending triggers picks it up later, so nothing accepted is lost.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from aiokafka.errors import KafkaError

from gobuild.platform.events import TOPIC_BUILD_TRIGGERS, BuildTriggered
from gobuild.platform.gateway.context import GatewayContext
from gobuild.platform.records import Build, Project, new_id

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TriggerRequest:
    source: str  # github | gitlab | api | redeploy
    ref: str
    branch: str | None
    tag: str | None = None
    commit_sha: str | None = None
    commit_message: str | None = None
    author: str | None = None
    delivery_id: str | None = None


async def enqueue_build(ctx: GatewayContext, project: Project, trigger: TriggerRequest) -> Build:
    """Create the build record and publish its trigger; returns the accepted build."""
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
        project_id=project.id,
        source=trigger.source,  # type: ignore[arg-type]
        repo_url=project.repo_url,
        ref=trigger.ref,
        branch=trigger.branch,
        tag=trigger.tag,
        commit_sha=trigger.commit_sha,
        commit_message=trigger.commit_message,
        author=trigger.author,
        delivery_id=trigger.delivery_id,
    )
    await ctx.builds.record_trigger(build, event)
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
        project.name,
        trigger.source,
        trigger.ref,
    )
    return build
