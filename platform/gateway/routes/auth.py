"""Sessions: password login, token refresh and logout, the sign-in code exchange, `/api/me`."""

from __future__ import annotations

import logging

from pydantic import ValidationError
from quart import Blueprint, request
from quart.typing import ResponseReturnValue
from quart_auth import logout_user
from quart_schema import (
    RequestSchemaValidationError,
    document_request,
    tag_blueprint,
    validate_request,
    validate_response,
)

from gobuild.platform.auth.authentication import AuthenticationError, LoginLocked
from gobuild.platform.auth.tokens import InvalidToken, TokenPair
from gobuild.platform.auth.users import UnknownUser, UserError
from gobuild.platform.gateway.access import request_session_id
from gobuild.platform.gateway.authorization import current_principal
from gobuild.platform.gateway.context import gateway
from gobuild.platform.gateway.errors import ApiError
from gobuild.platform.gateway.openapi import document_errors, document_raw_response, public
from gobuild.platform.gateway.schemas import (
    CodeExchange,
    LoginRequest,
    LogoutRequest,
    MeView,
    PasswordChange,
    RefreshRequest,
)

log = logging.getLogger(__name__)
blueprint = Blueprint("auth", __name__, url_prefix="/api")
tag_blueprint(blueprint, ["sessions"])


def _locked(error: LoginLocked) -> ApiError:
    return ApiError(429, "account locked", str(error), {"Retry-After": str(error.retry_after)})


@blueprint.post("/auth/login")
@public
@validate_request(LoginRequest)
@validate_response(TokenPair)
@document_errors(401)
async def login(data: LoginRequest) -> ResponseReturnValue:
    """Log in with a password: an access token (JWT) and a refresh token.

    Repeated failures lock the account for a while (429 with `Retry-After`).
    """
    ctx = gateway()
    try:
        return await ctx.auth.authenticator.password_login(data.username, data.password)
    except LoginLocked as error:
        raise _locked(error) from None
    except AuthenticationError as error:
        raise ApiError(401, "login failed", str(error)) from None


@blueprint.post("/auth/refresh")
@public
@validate_request(RefreshRequest)
@validate_response(TokenPair)
@document_errors(401)
async def refresh(data: RefreshRequest) -> ResponseReturnValue:
    """Trade a refresh token for a new pair; the old refresh token is used up.

    Presenting a used refresh token again revokes every token of that login.
    """
    try:
        return await gateway().auth.tokens.rotate(data.refresh_token)
    except InvalidToken as error:
        raise ApiError(401, "invalid refresh token", str(error)) from None


@blueprint.post("/auth/exchange")
@public
@validate_request(CodeExchange)
@validate_response(TokenPair)
@document_errors(401)
async def exchange(data: CodeExchange) -> ResponseReturnValue:
    """Trade the one-time code of a GitHub / GitLab sign-in for a token pair (once, 60 s)."""
    ctx = gateway()
    username = await ctx.auth.oauth.redeem_login_code(data.code)
    if username is None:
        raise ApiError(401, "invalid sign-in code", "the code is unknown, used or expired")
    try:
        return await ctx.auth.tokens.issue_token_pair(username)
    except UnknownUser:
        raise ApiError(401, "invalid sign-in code", "the user no longer exists") from None


async def _optional_body(model: type[LogoutRequest]) -> LogoutRequest:
    """The body as `model`, or its defaults when the request has no body."""
    if not await request.get_data(cache=True):
        return model()
    try:
        return model.model_validate(await request.get_json())
    except ValidationError as error:
        raise RequestSchemaValidationError(error) from None


@blueprint.post("/auth/logout")
@document_request(LogoutRequest)
@document_raw_response(204, "Logged out: the tokens and the session cookie no longer work.")
async def logout() -> ResponseReturnValue:
    """Log out: revoke the access token in use, the given refresh token's login (the body
    is optional) and the browser session."""
    ctx = gateway()
    principal = current_principal()
    data = await _optional_body(LogoutRequest)
    await ctx.auth.tokens.logout(data.refresh_token, principal.jti, principal.token_expires_at)
    session_id = request_session_id()
    if session_id:
        await ctx.auth.sessions.end(session_id)
        logout_user()
    return "", 204


@blueprint.get("/me")
@validate_response(MeView)
async def me() -> ResponseReturnValue:
    """Who the caller is: user, roles, projects, and an API key's scopes."""
    principal = current_principal()
    user = await gateway().auth.users.get(principal.username)
    return MeView(
        username=principal.username,
        kind=principal.kind,
        is_admin=principal.is_admin,
        roles=principal.instance_roles,
        projects=dict(principal.project_roles),
        scopes=sorted(principal.scopes) if principal.scopes is not None else None,
        key_id=principal.key_id,
        email=user.email if user else None,
        name=user.name if user else None,
    )


@blueprint.post("/me/password")
@validate_request(PasswordChange)
@document_raw_response(204, "Changed; every refresh token of the user is revoked.")
async def change_password(data: PasswordChange) -> ResponseReturnValue:
    """Change one's own password (a signed-in user, not an API key); ends other logins."""
    principal = current_principal()
    if principal.kind != "user":
        raise ApiError(403, "forbidden", "sign in as the user to change their password")
    ctx = gateway()
    user = await ctx.auth.users.get(principal.username)
    if user is not None and user.password_hash is not None:
        try:
            await ctx.auth.authenticator.check_password(principal.username, data.current_password)
        except LoginLocked as error:
            raise _locked(error) from None
        except AuthenticationError:
            raise ApiError(403, "forbidden", "the current password is not right") from None
    try:
        await ctx.auth.users.set_password(principal.username, data.new_password)
    except UserError as error:
        raise ApiError(422, "invalid password", str(error)) from None
    await ctx.auth.tokens.revoke_all(principal.username)
    log.info("password changed", extra={"username": principal.username})
    return "", 204
