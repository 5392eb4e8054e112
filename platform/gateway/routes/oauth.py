"""Sign in with GitHub or GitLab in the browser.

`/auth/{provider}/login` redirects to the provider with `state` and a PKCE challenge, and
binds the state to the browser with a short-lived cookie. `/auth/{provider}/callback` checks
the state (against Redis, once, and against that cookie), exchanges the code, signs the user
in or links or creates their account, opens a browser session (cookie) and redirects to the
dashboard with a one-time `?code=` that `POST /api/auth/exchange` turns into tokens. Tokens
never travel in a URL.
"""

from __future__ import annotations

import hmac
import logging
from urllib.parse import urlencode, urlsplit, urlunsplit

from quart import Blueprint, Response, redirect, request
from quart_auth import AuthUser, login_user
from quart_schema import document_querystring, tag_blueprint

from gobuild.platform.auth.oauth import PROVIDERS, OAuthError, enabled_providers
from gobuild.platform.gateway.context import GatewayContext, gateway
from gobuild.platform.gateway.errors import ApiError
from gobuild.platform.gateway.openapi import document_errors, document_raw_response, public
from gobuild.platform.gateway.schemas import OAuthCallbackQuery

log = logging.getLogger(__name__)
blueprint = Blueprint("oauth", __name__, url_prefix="/auth")
tag_blueprint(blueprint, ["sign-in"])

STATE_COOKIE = "gobuild_oauth_state"
_PROVIDER = "<any(" + ", ".join(PROVIDERS) + "):provider>"


def callback_url(ctx: GatewayContext, provider: str) -> str:
    """The redirect URI to register with the provider's OAuth application."""
    return f"{ctx.settings.gateway_public_url}/auth/{provider}/callback"


def dashboard_landing(ctx: GatewayContext, code: str) -> str:
    """The dashboard URL with the one-time code added to its query."""
    base = ctx.gateway_settings.dashboard_url or f"{ctx.settings.gateway_public_url}/"
    parts = urlsplit(base)
    query = "&".join(q for q in (parts.query, urlencode({"code": code})) if q)
    return urlunsplit((parts.scheme, parts.netloc, parts.path or "/", query, ""))


def _secure_cookies(ctx: GatewayContext) -> bool:
    return ctx.settings.gateway_public_url.startswith("https://")


@blueprint.get(f"/{_PROVIDER}/login")
@public
@document_raw_response(
    302,
    "Redirect to the provider's authorization page.",
    headers={"Location": "the provider's authorization URL (state and PKCE challenge)"},
)
async def oauth_login(provider: str) -> Response:
    """Start signing in with GitHub or GitLab."""
    ctx = gateway()
    if provider not in enabled_providers(ctx.auth.settings):
        raise ApiError(404, "sign-in provider not configured", provider)
    url, state = await ctx.auth.oauth.authorization_url(provider, callback_url(ctx, provider))
    response = redirect(url)
    response.set_cookie(
        STATE_COOKIE,
        state,
        max_age=600,
        path="/auth/",
        httponly=True,
        secure=_secure_cookies(ctx),
        samesite="Lax",
    )
    return response


@blueprint.get(f"/{_PROVIDER}/callback")
@public
@document_querystring(OAuthCallbackQuery)
@document_raw_response(
    302,
    "Signed in: a session cookie is set and the browser goes to the dashboard with a "
    "one-time `code` for `POST /api/auth/exchange`.",
    headers={"Location": "the dashboard URL with `?code=`"},
)
@document_errors(400, 403)
async def oauth_callback(provider: str) -> Response:
    """Where the provider sends the browser back after sign-in."""
    ctx = gateway()
    args = request.args
    if args.get("error"):
        detail = args.get("error_description") or args["error"]
        raise ApiError(400, "sign-in was not completed", f"{provider}: {detail}")
    state = args.get("state", "")
    bound_state = request.cookies.get(STATE_COOKIE, "")
    if not state or not hmac.compare_digest(state.encode(), bound_state.encode()):
        raise ApiError(
            400,
            "sign-in failed",
            "the sign-in state does not match this browser; start signing in again",
        )
    oauth = ctx.auth.oauth
    try:
        provider_user = await oauth.complete(
            provider, state, args.get("code", ""), callback_url(ctx, provider)
        )
    except OAuthError as error:
        raise ApiError(400, "sign-in failed", str(error)) from None
    try:
        username = await oauth.sign_in(provider_user)
    except OAuthError as error:
        raise ApiError(403, "sign-in refused", str(error)) from None
    session_id = await ctx.auth.sessions.open(username)
    login_user(AuthUser(session_id), remember=True)
    code = await oauth.issue_login_code(username)
    log.info("signed in with %s", provider, extra={"username": username})
    response = redirect(dashboard_landing(ctx, code))
    response.delete_cookie(STATE_COOKIE, path="/auth/")
    return response
