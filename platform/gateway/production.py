"""A project's production alias by hand: promote (or roll back to) any of its deployments, which
pins the alias there, and un-pin it so it follows the newest production deployment again.

Every change is told on `deployment-status`. Redis holds the alias; an event the broker did
not take is logged and not retried (the dashboard re-reads the alias with the project).
"""

from __future__ import annotations

import logging

from aiokafka.errors import KafkaError

from gobuild.platform.events import (
    TOPIC_DEPLOYMENT_STATUS,
    DeploymentState,
    DeploymentStatusChanged,
)
from gobuild.platform.gateway.context import GatewayContext
from gobuild.platform.gateway.schemas import ProductionView
from gobuild.platform.records import Deployment, Project

log = logging.getLogger(__name__)


async def production_view(ctx: GatewayContext, project: Project) -> ProductionView:
    alias = await ctx.deployments.production_alias(project.id)
    head = await ctx.deployments.production_head(project.id)
    return ProductionView(
        project_id=project.id,
        url=ctx.settings.deployment_url(project.name),
        deployment_id=alias.deployment_id if alias else None,
        pinned=bool(alias and alias.pinned),
        following_deployment_id=head.deployment_id if head else None,
    )


async def promote_deployment(
    ctx: GatewayContext, project: Project, deployment: Deployment
) -> ProductionView:
    """Serve `deployment` at the production alias now, and keep it there (pinned).

    A deployment older than the one the alias served is a rollback (`rolled_back`), any other
    a promotion (`promoted`); then `pinned`.
    """
    previous = await ctx.deployments.promote_and_pin(deployment)
    alias_url = ctx.settings.deployment_url(project.name)
    rollback = previous is not None and previous.number > deployment.number
    await _tell(ctx, deployment, "rolled_back" if rollback else "promoted", alias_url)
    await _tell(ctx, deployment, "pinned", alias_url)
    log.info(
        "production of %s %s to %s and pinned",
        project.name,
        "rolled back" if rollback else "promoted",
        deployment.id,
    )
    return await production_view(ctx, project)


async def unpin_production(ctx: GatewayContext, project: Project) -> ProductionView:
    """Let the alias follow new production deployments again, serving the newest one now
    (`promoted` if that moved it, then `unpinned`). Un-pinning an alias that is not pinned
    changes nothing."""
    changed = await ctx.deployments.unpin(project.id)
    if changed is not None:
        before, after = changed
        deployment = await ctx.deployments.get(after.deployment_id)
        alias_url = ctx.settings.deployment_url(project.name)
        if deployment is not None:
            if after.deployment_id != before.deployment_id:
                await _tell(ctx, deployment, "promoted", alias_url)
            await _tell(ctx, deployment, "unpinned", alias_url)
        log.info("production of %s un-pinned; serving %s", project.name, after.deployment_id)
    return await production_view(ctx, project)


async def _tell(
    ctx: GatewayContext, deployment: Deployment, state: DeploymentState, alias_url: str
) -> None:
    event = DeploymentStatusChanged(
        deployment_id=deployment.id,
        build_id=deployment.build_id,
        project_id=deployment.project_id,
        state=state,
        url=deployment.url,
        alias_url=alias_url,
    )
    try:
        await ctx.producer.publish(TOPIC_DEPLOYMENT_STATUS, event)
    except (KafkaError, TimeoutError, OSError) as exc:
        log.warning("deployment %s %s not published: %s", deployment.id, state, exc)
