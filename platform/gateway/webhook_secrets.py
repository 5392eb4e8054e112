"""Rotating a project's webhook secret with a grace period for the old one.

The new secret goes into the project record; the previous one is kept under a gateway-owned
Redis key that expires when the grace period ends (GOBUILD_WEBHOOK_SECRET_GRACE_SECONDS), so
deliveries signed with either are accepted meanwhile. A second rotation within the grace
period replaces the kept secret with the one it retires.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Sequence
from datetime import datetime, timedelta

import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline

from gobuild.platform.events import utcnow
from gobuild.platform.records import Project
from gobuild.platform.stores.keys import key_previous_webhook_secret, key_project
from gobuild.platform.stores.optimistic import optimistic_update

log = logging.getLogger(__name__)


async def rotate_webhook_secret(
    redis: aioredis.Redis, project_id: str, grace_seconds: int
) -> tuple[str, datetime | None]:
    """Give the project a new secret; returns it and until when the old one still works.

    Raises LookupError if the project does not exist.
    """
    new_secret = secrets.token_urlsafe(32)
    key = key_project(project_id)

    async def transaction(pipe: Pipeline) -> None:
        raw = await pipe.get(key)
        if raw is None:
            raise LookupError(project_id)
        project = Project.model_validate_json(raw)
        updated = project.model_copy(update={"webhook_secret": new_secret})
        pipe.multi()
        pipe.set(key, updated.model_dump_json())
        if grace_seconds > 0:
            pipe.set(
                key_previous_webhook_secret(project_id), project.webhook_secret, ex=grace_seconds
            )
        else:
            pipe.delete(key_previous_webhook_secret(project_id))

    await optimistic_update(redis, [key], transaction, what=f"project {project_id}")
    log.info("webhook secret of project %s rotated", project_id)
    valid_until = utcnow() + timedelta(seconds=grace_seconds) if grace_seconds > 0 else None
    return new_secret, valid_until


async def accepted_secrets(
    redis: aioredis.Redis, projects: Sequence[Project]
) -> list[tuple[Project, list[str]]]:
    """Each project with the secrets a delivery may be signed with: current, then previous."""
    if not projects:
        return []
    previous = await redis.mget([key_previous_webhook_secret(p.id) for p in projects])
    return [
        (project, [project.webhook_secret, *([old] if old else [])])
        for project, old in zip(projects, previous, strict=True)
    ]
