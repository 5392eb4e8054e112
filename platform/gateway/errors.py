"""Errors as JSON: `{"error": "...", "detail": ...}` with the right status, never a stack trace."""

from __future__ import annotations

import logging
from typing import Any

from pydantic import ValidationError
from quart import Quart, Response, jsonify
from quart_schema import RequestSchemaValidationError
from werkzeug.exceptions import HTTPException

from gobuild.webhooks import WebhookError

log = logging.getLogger(__name__)


class ApiError(Exception):
    """Raised by handlers and logic to answer with a JSON error."""

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


def describe_validation_error(exc: ValidationError) -> list[dict[str, str]]:
    """Each problem with the field it concerns, e.g. `{"field": "repo_url", "message": ...}`."""
    return [
        {"field": ".".join(str(p) for p in err["loc"]) or "(body)", "message": err["msg"]}
        for err in exc.errors()
    ]


def register_error_handlers(app: Quart) -> None:
    @app.errorhandler(ApiError)
    async def _api_error(exc: ApiError) -> Response:
        return error_response(exc.status, exc.error, exc.detail, exc.headers)

    @app.errorhandler(WebhookError)
    async def _webhook_error(exc: WebhookError) -> Response:
        # A delivery that is unsigned, unsupported or malformed: the webhooks package says why.
        return error_response(exc.status, exc.message)

    @app.errorhandler(RequestSchemaValidationError)
    async def _schema_error(exc: RequestSchemaValidationError) -> Response:
        inner = exc.validation_error
        if isinstance(inner, ValidationError):
            detail: Any = describe_validation_error(inner)
            fields = ", ".join(d["field"] for d in detail)
            return error_response(422, f"invalid request: check {fields}", detail)
        return error_response(400, "request body is not valid JSON", str(inner))

    @app.errorhandler(HTTPException)
    async def _http_error(exc: HTTPException) -> Response:
        status = exc.code or 500
        messages = {
            404: "not found",
            405: "method not allowed",
            413: "request body too large",
        }
        return error_response(status, messages.get(status, exc.name.lower()), exc.description)

    @app.errorhandler(Exception)
    async def _unexpected(exc: Exception) -> Response:
        log.exception("unhandled error")
        return error_response(500, "internal error")
