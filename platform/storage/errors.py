"""JSON errors for every failure a client can see: `{"error": "...", "detail": ...}`."""

from __future__ import annotations

import logging
from typing import Any

from quart import Quart, Response, jsonify
from werkzeug.exceptions import HTTPException

log = logging.getLogger(__name__)


class ApiError(Exception):
    """A request that cannot be served; becomes a JSON response with `status`."""

    def __init__(self, status: int, error: str, detail: Any = None) -> None:
        super().__init__(error)
        self.status = status
        self.error = error
        self.detail = detail


def error_response(status: int, error: str, detail: Any = None) -> Response:
    response = jsonify({"error": error, "detail": detail})
    response.status_code = status
    return response


async def _api_error(exc: ApiError) -> Response:
    return error_response(exc.status, exc.error, exc.detail)


async def _http_error(exc: HTTPException) -> Response:
    status = exc.code or 500
    response = error_response(status, (exc.name or "error").lower(), exc.description)
    # Keep headers such as Allow (405) and Content-Range (416) that the exception carries.
    for name, value in exc.get_headers():
        if name.lower() != "content-type":
            response.headers[name] = value
    return response


async def _unexpected_error(exc: Exception) -> Response:
    log.exception("unhandled error", exc_info=exc)
    return error_response(500, "internal error", "the storage service failed; see its log")


def register_error_handlers(app: Quart) -> None:
    app.register_error_handler(ApiError, _api_error)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(Exception, _unexpected_error)
