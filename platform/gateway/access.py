"""The one authentication layer of the gateway: who is calling, and at what rate.

A `before_request` hook resolves the caller to a `Principal` (kept in `g`) from, in order:
the `Authorization` header (admin API key, `gb_` API key by Bearer or Basic, JWT access token,
Basic `user:password` when allowed), else the browser session cookie of a GitHub / GitLab
sign-in. Every `/api` route but the sign-in ones and the shared builds (`/api/shared/`, opened
by a share link's token) needs a caller. The hook also spends the request's rate-limit budget
and refuses oversized API bodies. What the caller may do is decided per route, in
`authorization`.
"""

from __future__ import annotations

import logging
from urllib.parse import urlsplit

from quart import g, request
from quart_auth import current_user, logout_user

from gobuild.platform.auth.authentication import AuthenticationError, LoginLocked
from gobuild.platform.auth.permissions import Principal
from gobuild.platform.config import RateLimitBucket
from gobuild.platform.gateway.context import GatewayContext, gateway
from gobuild.platform.gateway.errors import ApiError
from gobuild.platform.gateway.ratelimits import budget_owner, client_address, spend

log = logging.getLogger(__name__)

CHALLENGE = {"WWW-Authenticate": 'Bearer realm="gobuild", Basic realm="gobuild"'}
# Public routes that spend the login budget, or (opaque single-use tokens) the API budget.
LOGIN_PATHS = frozenset({"/api/auth/login"})
TOKEN_PATHS = frozenset({"/api/auth/refresh", "/api/auth/exchange"})
# A shared build is opened with the share link's token alone (public, the API budget per address).
SHARED_PREFIX = "/api/shared/"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_PRINCIPAL = "gobuild_principal"
_SESSION = "gobuild_session_id"


def authentication_required() -> ApiError:
    return ApiError(
        401,
        "authentication required",
        "send an access token or API key as Bearer token, or an API key as Basic password",
        CHALLENGE,
    )


def request_principal() -> Principal | None:
    """The caller resolved for this request; None when anonymous."""
    return g.get(_PRINCIPAL)


def request_session_id() -> str | None:
    """The browser session the caller came with, if they came with the cookie."""
    return g.get(_SESSION)


async def authenticate_request() -> None:
    """`before_request` of the app (after deployment hosts have been served)."""
    if request.method == "OPTIONS":
        return
    ctx = gateway()
    path = request.path
    address = client_address(ctx)
    if path.startswith("/webhooks/"):
        await spend(ctx, RateLimitBucket.WEBHOOK, f"ip:{address}")
        return
    if path.startswith("/auth/"):  # GitHub / GitLab sign-in in the browser
        await spend(ctx, RateLimitBucket.LOGIN, f"ip:{address}")
        return
    if not path.startswith("/api/"):
        return  # health checks and the API description
    _refuse_declared_oversize(ctx)
    if path in LOGIN_PATHS:
        await spend(ctx, RateLimitBucket.LOGIN, f"ip:{address}")
    elif path in TOKEN_PATHS or path.startswith(SHARED_PREFIX):
        await spend(ctx, RateLimitBucket.API, f"ip:{address}")
    else:
        principal = await _resolve_principal(ctx, address)
        setattr(g, _PRINCIPAL, principal)
        await spend(ctx, RateLimitBucket.API, budget_owner(principal, address))
        if principal is None:
            raise authentication_required()
    await _refuse_streamed_oversize(ctx)


async def _resolve_principal(ctx: GatewayContext, address: str) -> Principal | None:
    header = request.headers.get("Authorization")
    if header:
        return await _from_header(ctx, header, address)
    return await _from_session_cookie(ctx)


async def _from_header(ctx: GatewayContext, header: str, address: str) -> Principal | None:
    authenticator = ctx.auth.authenticator
    password_attempt = authenticator.is_password_attempt(header)
    if password_attempt:
        await spend(ctx, RateLimitBucket.LOGIN, f"ip:{address}")
    try:
        return await authenticator.authenticate(header)
    except LoginLocked as error:
        raise ApiError(
            429, "account locked", str(error), {"Retry-After": str(error.retry_after)}
        ) from None
    except AuthenticationError as error:
        if not password_attempt:  # failed credentials spend the login budget too
            await spend(ctx, RateLimitBucket.LOGIN, f"ip:{address}")
        raise ApiError(401, "invalid credentials", str(error), CHALLENGE) from None


async def _from_session_cookie(ctx: GatewayContext) -> Principal | None:
    session_id = current_user.auth_id
    if not session_id:
        return None
    username = await ctx.auth.sessions.username_of(session_id)
    principal = await ctx.auth.authenticator.principal_for_user(username) if username else None
    if principal is None:
        logout_user()  # an ended or expired session: drop the cookie
        return None
    if request.method not in SAFE_METHODS:
        _refuse_cross_site(ctx)
    setattr(g, _SESSION, session_id)
    return principal


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower()


def _refuse_cross_site(ctx: GatewayContext) -> None:
    """A cookie-authenticated change must come from the gateway's or the dashboard's pages."""
    allowed = {_origin(ctx.settings.gateway_public_url)}
    if ctx.gateway_settings.dashboard_url:
        allowed.add(_origin(ctx.gateway_settings.dashboard_url))
    origin = request.headers.get("Origin")
    cross_site = (
        origin.lower() not in allowed
        if origin
        else request.headers.get("Sec-Fetch-Site") == "cross-site"
    )
    if cross_site:
        raise ApiError(
            403,
            "cross-site request refused",
            "a request authenticated by the session cookie must come from GoBuild's own pages",
        )


def _too_large(ctx: GatewayContext) -> ApiError:
    limit = ctx.gateway_settings.max_api_body_bytes
    return ApiError(413, "request body too large", f"limit is {limit} bytes")


def _refuse_declared_oversize(ctx: GatewayContext) -> None:
    length = request.content_length
    if length is not None and length > ctx.gateway_settings.max_api_body_bytes:
        raise _too_large(ctx)


async def _refuse_streamed_oversize(ctx: GatewayContext) -> None:
    """A body sent without Content-Length is read (up to GOBUILD_MAX_BODY_BYTES) and measured."""
    if request.content_length is not None or request.method in SAFE_METHODS:
        return
    body = await request.get_data(cache=True, as_text=False)
    if len(body) > ctx.gateway_settings.max_api_body_bytes:
        raise _too_large(ctx)
