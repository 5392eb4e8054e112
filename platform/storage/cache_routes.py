"""Routes for caches (dependency downloads, incremental build folders) that builders on any
host save and restore: upload (streamed, hashed, only while the key is free), download,
delete one, delete all of a project."""

from __future__ import annotations

import logging
import re
from typing import cast

from quart import Blueprint, Response, request
from werkzeug.exceptions import RequestEntityTooLarge

from gobuild.platform.api_errors import ApiError
from gobuild.platform.cache_records import STORED_CACHE_KINDS, StoredCacheKind, is_valid_cache_key
from gobuild.platform.storage.artifacts import ChecksumMismatchError
from gobuild.platform.storage.file_response import file_response
from gobuild.platform.storage.services import services
from gobuild.platform.storage.uploads import (
    SHA256_HEX,
    UPLOAD_IDLE_TIMEOUT_SECONDS,
    UploadTooLargeError,
    request_chunks,
)
from gobuild.platform.storage_client import CHECKSUM_HEADER

log = logging.getLogger(__name__)
blueprint = Blueprint("caches", __name__)

CACHE_CONTENT_TYPE = "application/gzip"
PROJECT_ID_PATTERN = re.compile(r"[a-z0-9_-]{1,64}")


def _require_project_id(project_id: str) -> None:
    if PROJECT_ID_PATTERN.fullmatch(project_id) is None:
        raise ApiError(
            400, "invalid project id", f"project id must match {PROJECT_ID_PATTERN.pattern}"
        )


def _require_cache(project_id: str, kind: str, key: str) -> StoredCacheKind:
    _require_project_id(project_id)
    if kind not in STORED_CACHE_KINDS:
        raise ApiError(400, "invalid cache kind", f"one of: {', '.join(STORED_CACHE_KINDS)}")
    if not is_valid_cache_key(key):
        raise ApiError(400, "invalid cache key", "letters, digits, '.', '_', '-'; at most 128")
    return cast(StoredCacheKind, kind)


@blueprint.put("/caches/<project_id>/<kind>/<key>")
async def upload_cache(project_id: str, kind: str, key: str) -> tuple[dict[str, object], int]:
    """Keep a new cache; 412 when the key is taken (caches never change once saved)."""
    checked_kind = _require_cache(project_id, kind, key)
    expected = request.headers.get(CHECKSUM_HEADER)
    if expected is not None:
        expected = expected.strip().lower()
        if not SHA256_HEX.fullmatch(expected):
            raise ApiError(400, "invalid checksum", f"{CHECKSUM_HEADER} must be 64 hex digits")
    store = services().caches
    try:
        blob = await store.save_new(project_id, checked_kind, key, request_chunks(), expected)
    except ChecksumMismatchError as exc:
        raise ApiError(
            400, "checksum mismatch", {"expected": exc.expected, "actual": exc.actual}
        ) from exc
    except (UploadTooLargeError, RequestEntityTooLarge) as exc:
        raise ApiError(413, "cache too large", f"the limit is {store.max_bytes} bytes") from exc
    except TimeoutError as exc:
        raise ApiError(
            408, "upload stalled", f"no data for {UPLOAD_IDLE_TIMEOUT_SECONDS:.0f}s"
        ) from exc
    except OSError as exc:
        log.error("writing cache %s/%s/%s failed: %s", project_id, kind, key, exc)
        raise ApiError(507, "cache not stored", exc.strerror or type(exc).__name__) from exc
    if blob is None:
        raise ApiError(412, "cache exists", f"{kind} cache '{key}' is already saved")
    return {"name": blob.name, "sha256": blob.sha256, "size": blob.size}, 201


@blueprint.get("/caches/<project_id>/<kind>/<key>")
async def download_cache(project_id: str, kind: str, key: str) -> Response:
    checked_kind = _require_cache(project_id, kind, key)
    store = services().caches
    blob = await store.describe(project_id, checked_kind, key)
    if blob is None:
        raise ApiError(404, "cache not found", f"no {kind} cache '{key}'")
    return await file_response(
        store.archive_path(project_id, checked_kind, key),
        size=blob.size,
        content_type=CACHE_CONTENT_TYPE,
        etag=blob.sha256,
        headers={CHECKSUM_HEADER: blob.sha256},
    )


@blueprint.delete("/caches/<project_id>/<kind>/<key>")
async def delete_cache(project_id: str, kind: str, key: str) -> tuple[str, int]:
    checked_kind = _require_cache(project_id, kind, key)
    await services().caches.delete(project_id, checked_kind, key)
    return "", 204


@blueprint.delete("/caches/<project_id>")
async def delete_project_caches(project_id: str) -> dict[str, int]:
    """Remove every cache of the project: how many archives and bytes went."""
    _require_project_id(project_id)
    removed = await services().caches.delete_project(project_id)
    return {"archives": removed.archives, "bytes": removed.bytes}
