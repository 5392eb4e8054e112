"""What the orchestrator tests share: projects and triggered builds in Redis, and builders
simulated by their heartbeats (the scheduler knows a builder by nothing else)."""

from __future__ import annotations

from datetime import datetime, timedelta

import redis.asyncio as aioredis

from gobuild.platform.events import BuildTriggered, utcnow
from gobuild.platform.records import Build, Project, new_id
from gobuild.platform.stores.builds import BuildStore
from gobuild.platform.stores.claims import BuildClaims
from gobuild.platform.stores.projects import ProjectStore


async def make_project(redis: aioredis.Redis, name: str = "site", **fields: object) -> Project:
    project = Project(
        id=new_id("p_"),
        name=f"{name}-{new_id('')[:6]}",
        repo_url=f"/srv/{name}.git",
        provider="git",
        webhook_secret="x" * 20,
        **fields,  # type: ignore[arg-type]
    )
    assert await ProjectStore(redis).create(project)
    return project


async def record(
    redis: aioredis.Redis,
    project: Project,
    branch: str = "main",
    *,
    production: bool | None = None,
    created_at: datetime | None = None,
    ago: float = 0.0,
) -> BuildTriggered:
    """A build recorded with its trigger, as the gateway does before it answers 202."""
    build = Build(
        id=new_id("b_"),
        project_id=project.id,
        source="api",
        repo_url=project.repo_url,
        ref=f"refs/heads/{branch}",
        branch=branch,
        production=branch == "main" if production is None else production,
        created_at=created_at or utcnow() - timedelta(seconds=ago),
    )
    trigger = BuildTriggered(
        build_id=build.id,
        project_id=project.id,
        source="api",
        repo_url=project.repo_url,
        ref=build.ref,
        branch=branch,
        commit_sha=None,
    )
    await BuildStore(redis).record_trigger(build, trigger)
    return trigger


async def builder_alive(
    redis: aioredis.Redis,
    builder_id: str,
    *,
    capacity: int = 1,
    running: list[str] | None = None,
    labels: list[str] | None = None,
    warm: list[str] | None = None,
) -> BuildClaims:
    """A builder whose heartbeat is current (`warm`: a project id for each of its idle warm
    containers)."""
    claims = BuildClaims(redis, builder_id)
    await claims.beat(
        {
            "id": builder_id,
            "running": running or [],
            "capacity": capacity,
            "labels": labels or [],
            "host": "test-host",
            "warm": warm or [],
        }
    )
    return claims


async def builder_gone(redis: aioredis.Redis, builder_id: str) -> None:
    """The builder's heartbeat is over (it stopped, or died and its heartbeat expired)."""
    await BuildClaims(redis, builder_id).end_heartbeat()
