"""The gateway's error answers: the shared JSON errors plus webhook and schema failures, and
503 while Redis cannot be reached."""

from __future__ import annotations

import logging
from typing import Any

from pydantic import ValidationError
from quart import Quart, Response
from quart_schema import RequestSchemaValidationError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from gobuild.platform import api_errors
from gobuild.platform.api_errors import ApiError, error_response
from gobuild.webhooks import WebhookError

__all__ = ["ApiError", "describe_validation_error", "error_response", "register_error_handlers"]

log = logging.getLogger(__name__)

# Redis that went away is usually back within seconds (`gobuild dev` and compose restart it).
REDIS_RETRY_AFTER_SECONDS = 5


def describe_validation_error(exc: ValidationError) -> list[dict[str, str]]:
    """Each problem with the field it concerns, e.g. `{"field": "repo_url", "message": ...}`."""
    return [
        {"field": ".".join(str(p) for p in err["loc"]) or "(body)", "message": err["msg"]}
        for err in exc.errors()
    ]


def register_error_handlers(app: Quart) -> None:
    api_errors.register_error_handlers(app)

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

    # Every route, the authentication hook and the rate limiter read Redis: while it is down
    # or not answering, say so (503, retry shortly) rather than "internal error".
    @app.errorhandler(RedisConnectionError)
    @app.errorhandler(RedisTimeoutError)
    async def _redis_unavailable(exc: RedisConnectionError | RedisTimeoutError) -> Response:
        log.warning("redis is unavailable: %s", exc)
        return error_response(
            503,
            "redis is unavailable",
            f"the gateway cannot reach its database; retry in {REDIS_RETRY_AFTER_SECONDS} seconds",
            {"Retry-After": str(REDIS_RETRY_AFTER_SECONDS)},
        )
