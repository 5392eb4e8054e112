"""A project's caches as the API shows them (hit rate, total size) and clearing them: the cache
index first, so no build restores a cache from then on, then the archives storage keeps."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from gobuild.platform.cache_records import CacheEntry
from gobuild.platform.gateway.context import GatewayContext
from gobuild.platform.records import Build
from gobuild.platform.storage_client import StorageClient
from gobuild.platform.stores.caches import CacheIndex

# The hit rate is of the cache uses of the project's newest builds, this many.
HIT_RATE_BUILDS = 20


@dataclass(frozen=True)
class CacheSummary:
    entries: list[CacheEntry]
    total_bytes: int
    hit_rate: float | None


def hit_rate(builds: Iterable[Build]) -> float | None:
    """Hits among every cache use of these builds; None when none used a cache."""
    results = [use.result for build in builds for use in build.caches]
    if not results:
        return None
    return round(results.count("hit") / len(results), 3)


async def cache_summary(ctx: GatewayContext, project_id: str) -> CacheSummary:
    entries = await CacheIndex(ctx.redis).entries(project_id)
    builds = await ctx.builds.list_for_project(project_id, HIT_RATE_BUILDS)
    return CacheSummary(
        entries=entries,
        total_bytes=sum(entry.size_bytes for entry in entries),
        hit_rate=hit_rate(builds),
    )


async def clear_caches(ctx: GatewayContext, project_id: str) -> tuple[int, int]:
    """Remove every cache of the project: how many, and the bytes storage freed. Raises
    StorageError when storage cannot be reached (the index is cleared already; clearing
    again removes the archives)."""
    removed = await CacheIndex(ctx.redis).clear(project_id)
    freed = await StorageClient(ctx.http, ctx.settings).delete_project_caches(project_id)
    return len(removed), freed
