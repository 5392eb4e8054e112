"""Streaming responses from the storage service through the gateway, never buffered whole."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable

import httpx
from quart import Response

from gobuild.platform.gateway.context import GatewayContext
from gobuild.platform.gateway.errors import ApiError

PASSED_HEADERS = (
    "Content-Type",
    "Content-Length",
    "Content-Disposition",
    "ETag",
    "Last-Modified",
    "X-Checksum-Sha256",
    "X-Log-Complete",
    "X-Log-Position",
)


async def open_storage_stream(
    ctx: GatewayContext,
    path: str,
    *,
    method: str = "GET",
    params: dict[str, str] | None = None,
    headers: dict[str, str] | None = None,
    read_timeout: float | None = 30.0,
) -> httpx.Response:
    """Send a request to storage (with the internal token) and open its response as a stream.

    `path` comes from a path builder of `gobuild.platform.storage_client`, never from input.
    """
    request = ctx.http.build_request(
        method,
        ctx.settings.storage_url.rstrip("/") + path,
        params=params,
        headers={**ctx.internal_headers(), **(headers or {})},
        timeout=httpx.Timeout(10.0, read=read_timeout),
    )
    try:
        return await ctx.http.send(request, stream=True)
    except httpx.HTTPError as exc:
        raise ApiError(503, "storage is unavailable", str(exc), {"Retry-After": "5"}) from exc


async def _relay(upstream: httpx.Response) -> AsyncIterator[bytes]:
    try:
        async for chunk in upstream.aiter_raw():
            yield chunk
    finally:
        await upstream.aclose()


def relay_response(
    upstream: httpx.Response, extra_headers: Iterable[tuple[str, str]] = ()
) -> Response:
    """A Quart response that streams `upstream`'s body and passes its useful headers on."""
    headers = {h: upstream.headers[h] for h in PASSED_HEADERS if h in upstream.headers}
    headers.update(dict(extra_headers))
    response = Response(_relay(upstream), status=upstream.status_code, headers=headers)
    response.timeout = None  # a followed log may stream for as long as the build runs
    return response
