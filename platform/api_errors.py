"""The one JSON error shape of every GoBuild HTTP service: `{"error": "...", "detail": ...}`.

`ApiError` is raised by handlers and logic; `register_error_handlers` turns it, HTTP errors
and anything unexpected into that shape with the right status, never a stack trace. `detail`
is left out when there is nothing more to say.
"""

from __future__ import annotations

import logging
from typing import Any

from quart import Quart, Response, jsonify
from werkzeug.exceptions import HTTPException

log = logging.getLogger(__name__)

# Short messages for the HTTP errors clients meet most; others use the status's own name.
HTTP_ERROR_MESSAGES = {
    404: "not found",
    405: "method not allowed",
    413: "request body too large",
}


class ApiError(Exception):
    """A request that cannot be served; becomes a JSON response with `status`."""

    def __init__(
        self,
        status: int,
        error: str,
        detail: Any = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(error)
        self.status = status
        self.error = error
        self.detail = detail
        self.headers = headers or {}


def error_response(
    status: int, error: str, detail: Any = None, headers: dict[str, str] | None = None
) -> Response:
    body: dict[str, Any] = {"error": error}
    if detail is not None:
        body["detail"] = detail
    response = jsonify(body)
    response.status_code = status
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


async def _api_error(exc: ApiError) -> Response:
    return error_response(exc.status, exc.error, exc.detail, exc.headers)


async def _http_error(exc: HTTPException) -> Response:
    status = exc.code or 500
    error = HTTP_ERROR_MESSAGES.get(status, (exc.name or "error").lower())
    # Keep headers such as Allow (405) and Content-Range (416) that the exception carries.
    headers = {k: v for k, v in exc.get_headers() if k.lower() != "content-type"}
    return error_response(status, error, exc.description, headers)


async def _unexpected_error(exc: Exception) -> Response:
    log.exception("unhandled error", exc_info=exc)
    return error_response(500, "internal error")


def register_error_handlers(app: Quart) -> None:
    """JSON answers for ApiError, HTTP errors and unexpected exceptions."""
    app.register_error_handler(ApiError, _api_error)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(Exception, _unexpected_error)
