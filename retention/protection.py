"""What retention never removes, whatever the policy says: the deployment the production alias
points at (pinned or not) and the production head, a build that is not finished, and
anything a live share link points at (the build, its log, artifact and deployment).

The planner asks before it plans a removal and the remover asks again right before it
removes, since a link may be shared or a deployment promoted in between. A cache is never
live in that sense, but one a build used since its removal was planned is kept.
"""

from __future__ import annotations

import redis.asyncio as aioredis

from gobuild.platform.auth.share_links import ShareLinkStore
from gobuild.platform.records import Build
from gobuild.platform.retention_records import PlannedRemoval
from gobuild.platform.stores.builds import BuildStore
from gobuild.platform.stores.caches import CacheIndex
from gobuild.platform.stores.deployment_records import DeploymentRecords


class LiveCheck:
    """Says why something is live (and must stay), or None when it may go."""

    def __init__(self, redis: aioredis.Redis, share_links: ShareLinkStore) -> None:
        self.builds = BuildStore(redis)
        self.deployments = DeploymentRecords(redis)
        self.share_links = share_links
        self.caches = CacheIndex(redis)

    async def production_deployments(self, project_id: str) -> frozenset[str]:
        """The deployments the production alias points at or follows (the head)."""
        alias = await self.deployments.production_alias(project_id)
        head = await self.deployments.production_head(project_id)
        return frozenset(a.deployment_id for a in (alias, head) if a is not None)

    async def why_build_is_live(
        self, build: Build, production: frozenset[str] | None = None
    ) -> str | None:
        if not build.state.is_terminal:
            return f"the build is {build.state.value}, not finished"
        if production is None:
            production = await self.production_deployments(build.project_id)
        if build.deployment_id is not None and build.deployment_id in production:
            return "its deployment is the production deployment"
        if await self.share_links.list_for_build(build.id):
            return "a live share link points at it"
        return None

    async def why_live(self, removal: PlannedRemoval) -> str | None:
        """Checked right before a planned removal is done."""
        if removal.category == "caches":
            return await self.why_cache_is_used(removal)
        production = await self.production_deployments(removal.project_id)
        if removal.deployment_id is not None and removal.deployment_id in production:
            return "it is the production deployment"
        if removal.build_id is None:
            return None
        build = await self.builds.get(removal.build_id)
        if build is None:
            return None  # already gone: removing again is harmless
        return await self.why_build_is_live(build, production)

    async def why_cache_is_used(self, removal: PlannedRemoval) -> str | None:
        """A build used the cache since its removal was planned (within the window, then)."""
        assert removal.cache_kind is not None and removal.cache_key is not None
        entry = await self.caches.get(removal.project_id, removal.cache_kind, removal.cache_key)
        if entry is None or removal.cache_used_at is None:
            return None  # already gone from the index: removing again is harmless
        if entry.last_used_at > removal.cache_used_at:
            return "a build used it since its removal was planned"
        return None
