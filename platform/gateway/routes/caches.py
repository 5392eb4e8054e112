"""A project's caches: list them with their hit rate and size, clear them (maintainers)."""

from __future__ import annotations

from quart import Blueprint
from quart.typing import ResponseReturnValue
from quart_schema import tag_blueprint, validate_response

from gobuild.platform.auth.permissions import Action
from gobuild.platform.gateway.context import gateway
from gobuild.platform.gateway.errors import ApiError
from gobuild.platform.gateway.openapi import document_errors
from gobuild.platform.gateway.project_caches import cache_summary, clear_caches
from gobuild.platform.gateway.routes.projects import find_project
from gobuild.platform.gateway.schemas import CacheList, CachesCleared, CacheView
from gobuild.platform.storage_client import StorageError

blueprint = Blueprint("caches", __name__)
tag_blueprint(blueprint, ["projects"])

STORAGE_RETRY_AFTER_SECONDS = 30


@blueprint.get("/api/projects/<project_ref>/caches")
@validate_response(CacheList)
async def list_caches(project_ref: str) -> ResponseReturnValue:
    """The project's caches (dependency downloads, incremental build folders, layer images),
    newest first, their total size and the hit rate of its last builds."""
    ctx = gateway()
    project = await find_project(ctx, project_ref, Action.BUILD_READ)
    summary = await cache_summary(ctx, project.id)
    return CacheList(
        caches=[CacheView(**entry.model_dump()) for entry in summary.entries],
        total_bytes=summary.total_bytes,
        hit_rate=summary.hit_rate,
    )


@blueprint.delete("/api/projects/<project_ref>/caches")
@validate_response(CachesCleared)
@document_errors(503)
async def delete_caches(project_ref: str) -> ResponseReturnValue:
    """Remove every cache of the project (maintainers and owners): its next build installs
    and builds from scratch, and saves new caches."""
    ctx = gateway()
    project = await find_project(ctx, project_ref, Action.CACHES_CLEAR)
    try:
        removed, freed = await clear_caches(ctx, project.id)
    except StorageError as exc:
        raise ApiError(
            503,
            "storage unavailable",
            f"{exc}; no build uses the caches any more, try again to free their space",
            headers={"Retry-After": str(STORAGE_RETRY_AFTER_SECONDS)},
        ) from None
    return CachesCleared(removed=removed, freed_bytes=freed)
