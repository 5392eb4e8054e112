"""The OpenAPI description (`/openapi.json`): every route with its auth and its errors.

Routes document their bodies with quart-schema (`validate_request`, `validate_response`,
`document_*`). This module adds what holds for whole classes of routes, so no route can
forget it: 401/403 where credentials are needed, 429 with the rate-limit headers, 400/413/422
where a body or query is validated, 404 where a path names something. It also documents
responses that are not JSON (logs, archives, redirects, 204).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from quart_schema import (
    APIKeySecurityScheme,
    HttpSecurityScheme,
    Info,
    QuartSchema,
    security_scheme,
)
from quart_schema.openapi import OpenAPIProvider
from quart_schema.validation import (
    QUART_SCHEMA_QUERYSTRING_ATTRIBUTE,
    QUART_SCHEMA_REQUEST_ATTRIBUTE,
)
from werkzeug.routing.rules import Rule

from gobuild.platform.gateway.schemas import ErrorBody

T = TypeVar("T", bound=Callable[..., Any])

SESSION_COOKIE = "gobuild_session"
_ERRORS_ATTRIBUTE = "_gobuild_error_responses"
_RAW_ATTRIBUTE = "_gobuild_raw_responses"
_PUBLIC_ATTRIBUTE = "_gobuild_public"
_ERROR_REF = {"$ref": "#/components/schemas/ErrorBody"}
_SECONDS = {"type": "string", "pattern": "^[0-9]+$"}

ERROR_DESCRIPTIONS = {
    400: "The body is not valid JSON, or the request is malformed.",
    401: "Credentials are missing or not valid.",
    403: "Authenticated, but not allowed to do this; `detail` says why.",
    404: "Not found. A project the caller does not belong to, and everything in it, is "
    "not found either.",
    409: "Conflicts with the current state; `detail` says how.",
    410: "Gone: the share link expired or was revoked; `error` says which.",
    413: "The request body is too large.",
    422: "A field is missing, unknown or not valid; `detail` names each field.",
    429: "Too many requests (rate limit, or an account locked after failed logins); retry "
    "after `Retry-After` seconds.",
    503: "Temporarily unavailable; retry after `Retry-After` seconds.",
}
_ERROR_HEADERS: dict[int, dict[str, Any]] = {
    401: {"WWW-Authenticate": {"schema": {"type": "string"}}},
    429: {
        "Retry-After": {"schema": _SECONDS, "required": True},
        "RateLimit-Limit": {"schema": _SECONDS},
        "RateLimit-Remaining": {"schema": _SECONDS},
        "RateLimit-Reset": {"schema": _SECONDS},
    },
    503: {"Retry-After": {"schema": _SECONDS, "required": True}},
}
_BODY_METHODS = frozenset({"post", "put", "patch", "delete"})


def document_errors(*statuses: int) -> Callable[[T], T]:
    """Document error responses a route gives beyond the ones of its class of routes."""

    def decorator(func: T) -> T:
        existing: set[int] = getattr(func, _ERRORS_ATTRIBUTE, set())
        setattr(func, _ERRORS_ATTRIBUTE, existing | set(statuses))
        return func

    return decorator


def document_raw_response(
    status: int,
    description: str,
    *,
    content_type: str | None = None,
    headers: dict[str, str] | None = None,
) -> Callable[[T], T]:
    """Document a response that is not a JSON model: a stream, an archive, a redirect, 204."""

    def decorator(func: T) -> T:
        responses: dict[int, dict[str, Any]] = dict(getattr(func, _RAW_ATTRIBUTE, {}))
        response: dict[str, Any] = {"description": description}
        if content_type is not None:
            response["content"] = {content_type: {"schema": {"type": "string"}}}
        if headers:
            response["headers"] = {
                name: {"description": text, "schema": {"type": "string"}, "required": True}
                for name, text in headers.items()
            }
        responses[status] = response
        setattr(func, _RAW_ATTRIBUTE, responses)
        return func

    return decorator


def public(func: T) -> T:
    """A route anyone may call (it may still check a secret of its own, like webhooks)."""
    setattr(func, _PUBLIC_ATTRIBUTE, True)
    return security_scheme([])(func)


def _error_response(status: int) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": ERROR_DESCRIPTIONS.get(status, "An error."),
        "content": {"application/json": {"schema": _ERROR_REF}},
    }
    if status in _ERROR_HEADERS:
        response["headers"] = _ERROR_HEADERS[status]
    return response


class GatewayOpenAPIProvider(OpenAPIProvider):
    def build_paths(self, rule: Rule) -> tuple[dict, dict]:
        paths, components = super().build_paths(rule)
        func = self._app.view_functions[rule.endpoint]
        components["ErrorBody"] = ErrorBody.model_json_schema(
            ref_template="#/components/schemas/{model}"
        )
        for path, operations in paths.items():
            for method, operation in operations.items():
                responses = self._fix_headers(dict(operation["responses"]))
                responses.update(getattr(func, _RAW_ATTRIBUTE, {}))
                for status in sorted(self._error_statuses(func, rule, path, method)):
                    responses.setdefault(status, _error_response(status))
                operation["responses"] = dict(sorted(responses.items()))
        return paths, components

    @staticmethod
    def _fix_headers(responses: dict[int, Any]) -> dict[int, Any]:
        """quart-schema puts response headers inside `content`; OpenAPI wants them beside it."""
        for status, response in responses.items():
            content = response.get("content", {})
            if "headers" in content:
                response = {**response, "content": dict(content)}
                response["headers"] = response["content"].pop("headers")
                responses[status] = response
        return responses

    @staticmethod
    def _error_statuses(func: Callable[..., Any], rule: Rule, path: str, method: str) -> set[int]:
        statuses: set[int] = set(getattr(func, _ERRORS_ATTRIBUTE, set()))
        if not getattr(func, _PUBLIC_ATTRIBUTE, False):
            statuses |= {401, 403}
        if path.startswith(("/api/", "/auth/", "/webhooks/")):
            statuses.add(429)
        if path.startswith("/api/") and method in _BODY_METHODS:
            statuses.add(413)
        if getattr(func, QUART_SCHEMA_REQUEST_ATTRIBUTE, None) is not None:
            statuses |= {400, 413, 422}
        if getattr(func, QUART_SCHEMA_QUERYSTRING_ATTRIBUTE, None) is not None:
            statuses.add(422)
        if rule.arguments:
            statuses.add(404)
        return statuses


def install_openapi(app: Any) -> QuartSchema:
    """quart-schema on the app: validation errors as JSON, and the API description."""
    return QuartSchema(
        app,
        info=Info(
            title="GoBuild API",
            version="1",
            description=(
                "Projects, builds, logs, artifacts, users, API keys and sign-in of a GoBuild "
                'instance. Errors are `{"error": ..., "detail": ...}`.'
            ),
        ),
        security_schemes={
            "bearer": HttpSecurityScheme(
                scheme="bearer",
                bearer_format="JWT access token, gb_ API key or the admin API key",
            ),
            "basic": HttpSecurityScheme(scheme="basic"),
            "session": APIKeySecurityScheme(name=SESSION_COOKIE, in_="cookie"),
        },
        security=[{"bearer": []}, {"basic": []}, {"session": []}],
        pydantic_dump_options={"mode": "json"},
        openapi_provider_class=GatewayOpenAPIProvider,
    )
