"""Read a small JSON object from the request body with its own size limit (the app-wide
MAX_CONTENT_LENGTH is sized for artifact uploads)."""

from __future__ import annotations

from typing import Any

from quart import request

from gobuild.platform.api_errors import ApiError
from gobuild.platform.request_json import InvalidJson, parse_json_body

MAX_JSON_BODY_BYTES = 64 * 1024


async def read_json_object(max_bytes: int = MAX_JSON_BODY_BYTES) -> dict[str, Any]:
    """The body as a JSON object; 413 when over `max_bytes`, 400 when not a JSON object."""
    if request.content_length is not None and request.content_length > max_bytes:
        raise ApiError(413, "request too large", f"a JSON body may be at most {max_bytes} bytes")
    body = bytearray()
    async for chunk in request.body:
        body += chunk
        if len(body) > max_bytes:
            raise ApiError(
                413, "request too large", f"a JSON body may be at most {max_bytes} bytes"
            )
    try:
        value = parse_json_body(bytes(body))
    except InvalidJson as exc:
        raise ApiError(400, "invalid json", str(exc)) from None
    if not isinstance(value, dict):
        raise ApiError(400, "invalid json", "the body must be a JSON object")
    return value
