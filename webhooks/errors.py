"""Why a webhook delivery was refused, with the HTTP status the gateway answers with."""

from __future__ import annotations

from typing import ClassVar

from pydantic import ValidationError


class WebhookError(ValueError):
    """A delivery GoBuild refuses; `code` and `message` go into the JSON error body."""

    status: ClassVar[int] = 400
    code: ClassVar[str] = "invalid_webhook"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidSignature(WebhookError):
    """The signature or token does not match the project's webhook secret."""

    status = 401
    code = "invalid_signature"


class UnsupportedEvent(WebhookError):
    """An event GoBuild does not build from (pull requests, issues, ...)."""

    status = 400
    code = "unsupported_event"


class MalformedPayload(WebhookError):
    """The body is not JSON, or lacks or mistypes a field GoBuild needs."""

    status = 400
    code = "malformed_payload"


def malformed_from(error: ValidationError, what: str) -> MalformedPayload:
    """Turn pydantic's first complaint into a message that names the field, e.g.
    `GitHub push payload is missing 'ref'`."""
    first = error.errors(include_url=False)[0]
    if first["type"] == "json_invalid":
        return MalformedPayload(f"{what} is not valid JSON: {first['msg']}")
    field = ".".join(str(part) for part in first["loc"])
    if not field:
        return MalformedPayload(f"{what} is invalid: {first['msg']}")
    if first["type"] == "missing":
        return MalformedPayload(f"{what} is missing '{field}'")
    return MalformedPayload(f"{what} has an invalid '{field}': {first['msg']}")
