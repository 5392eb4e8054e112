"""Routes for build artifacts: upload (streamed and hashed), download, metadata, delete."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator

from quart import Blueprint, Response, request
from werkzeug.exceptions import RequestEntityTooLarge

from gobuild.platform.api_errors import ApiError
from gobuild.platform.storage.artifacts import (
    ArtifactTooLargeError,
    ArtifactWriteError,
    ChecksumMismatchError,
)
from gobuild.platform.storage.file_response import file_response
from gobuild.platform.storage.identifiers import require_build_id
from gobuild.platform.storage.services import services
from gobuild.platform.storage_client import CHECKSUM_HEADER

log = logging.getLogger(__name__)
blueprint = Blueprint("artifacts", __name__)

ARTIFACT_CONTENT_TYPE = "application/gzip"
SHA256_HEX = re.compile(r"[0-9a-f]{64}")
# An upload that sends nothing for this long is abandoned; a slow but moving one is not.
UPLOAD_IDLE_TIMEOUT_SECONDS = 120.0


async def _request_chunks() -> AsyncIterator[bytes]:
    """The request body as it arrives; raises TimeoutError when it stalls."""
    body = request.body.__aiter__()
    while True:
        try:
            async with asyncio.timeout(UPLOAD_IDLE_TIMEOUT_SECONDS):
                chunk = await body.__anext__()
        except StopAsyncIteration:
            return
        yield chunk


@blueprint.put("/artifacts/<build_id>")
async def upload_artifact(build_id: str) -> tuple[dict[str, object], int]:
    require_build_id(build_id)
    expected = request.headers.get(CHECKSUM_HEADER)
    if expected is not None:
        expected = expected.strip().lower()
        if not SHA256_HEX.fullmatch(expected):
            raise ApiError(400, "invalid checksum", f"{CHECKSUM_HEADER} must be 64 hex digits")
    try:
        ref = await services().artifacts.save(build_id, _request_chunks(), expected)
    except ChecksumMismatchError as exc:
        raise ApiError(
            400, "checksum mismatch", {"expected": exc.expected, "actual": exc.actual}
        ) from exc
    except (ArtifactTooLargeError, RequestEntityTooLarge) as exc:
        limit = services().artifacts.max_bytes
        raise ApiError(413, "artifact too large", f"the limit is {limit} bytes") from exc
    except TimeoutError as exc:
        raise ApiError(
            408, "upload stalled", f"no data for {UPLOAD_IDLE_TIMEOUT_SECONDS:.0f}s"
        ) from exc
    except ArtifactWriteError as exc:
        log.error("%s", exc)
        status = 507 if exc.disk_full else 500
        raise ApiError(status, "artifact not stored", str(exc)) from exc
    return ref.model_dump(), 201


@blueprint.get("/artifacts/<build_id>")
async def download_artifact(build_id: str) -> Response:
    require_build_id(build_id)
    store = services().artifacts
    ref = await store.describe(build_id)
    if ref is None:
        raise ApiError(404, "artifact not found", f"build '{build_id}' has no artifact")
    return await file_response(
        store.archive_path(build_id),
        size=ref.size,
        content_type=ARTIFACT_CONTENT_TYPE,
        etag=ref.sha256,
        attachment_name=ref.name,
        headers={CHECKSUM_HEADER: ref.sha256},
    )


@blueprint.get("/artifacts/<build_id>/meta")
async def artifact_meta(build_id: str) -> dict[str, object]:
    require_build_id(build_id)
    ref = await services().artifacts.describe(build_id)
    if ref is None:
        raise ApiError(404, "artifact not found", f"build '{build_id}' has no artifact")
    return ref.model_dump()


@blueprint.delete("/artifacts/<build_id>")
async def delete_artifact(build_id: str) -> tuple[str, int]:
    require_build_id(build_id)
    await services().artifacts.delete(build_id)
    return "", 204
