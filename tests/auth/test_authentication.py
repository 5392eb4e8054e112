"""Resolving the Authorization header to a principal, and password logins with lockout."""

from __future__ import annotations

import base64
from collections.abc import Callable

import pytest
import redis.asyncio as aioredis

from gobuild.platform.auth.authentication import AuthenticationError, LoginLocked
from gobuild.platform.auth.permissions import Action, ProjectRole, is_allowed
from gobuild.platform.auth.service import AuthService, create_auth_service
from gobuild.platform.config import AuthSettings, Settings
from tests.auth.conftest import ADMIN_KEY


def basic(username: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()


async def test_no_header_is_anonymous(auth: AuthService) -> None:
    assert await auth.authenticator.authenticate(None) is None
    assert await auth.authenticator.authenticate("") is None


async def test_admin_key_as_bearer_or_basic_password_is_the_admin(auth: AuthService) -> None:
    for header in (f"Bearer {ADMIN_KEY}", basic("anyone", ADMIN_KEY)):
        principal = await auth.authenticator.authenticate(header)
        assert principal is not None and principal.kind == "admin_key"
        assert is_allowed(principal, Action.USERS_MANAGE)
    with pytest.raises(AuthenticationError):
        await auth.authenticator.authenticate(f"Bearer {ADMIN_KEY}x")


async def test_access_token_gives_the_users_current_roles(auth: AuthService) -> None:
    await auth.users.create("jane")
    await auth.users.set_member("p_site", "jane", "viewer")
    pair = await auth.tokens.issue_token_pair("jane")
    await auth.users.set_member("p_site", "jane", "maintainer")
    principal = await auth.authenticator.authenticate(f"Bearer {pair.access_token}")
    assert principal is not None
    assert principal.kind == "user" and principal.username == "jane"
    assert principal.project_roles == {"p_site": ProjectRole.MAINTAINER}
    assert principal.jti and principal.token_expires_at
    assert is_allowed(principal, Action.BUILD_CREATE, "p_site")


async def test_invalid_or_revoked_access_token_is_refused(auth: AuthService) -> None:
    await auth.users.create("jane")
    pair = await auth.tokens.issue_token_pair("jane")
    principal = await auth.authenticator.authenticate(f"Bearer {pair.access_token}")
    assert principal is not None
    await auth.tokens.logout(pair.refresh_token, principal.jti, principal.token_expires_at)
    for header in (f"Bearer {pair.access_token}", "Bearer nonsense", "Bearer", "Token abc"):
        with pytest.raises(AuthenticationError):
            await auth.authenticator.authenticate(header)


async def test_token_of_a_deleted_user_is_refused(auth: AuthService) -> None:
    await auth.users.create("root", is_admin=True)
    await auth.users.create("jane")
    pair = await auth.tokens.issue_token_pair("jane")
    await auth.users.delete("jane")
    with pytest.raises(AuthenticationError, match="no longer exists"):
        await auth.authenticator.authenticate(f"Bearer {pair.access_token}")


async def test_api_key_works_as_basic_password(auth: AuthService) -> None:
    await auth.users.create("jane")
    _, plaintext = await auth.api_keys.create("jane", "git", ["builds:read"])
    principal = await auth.authenticator.authenticate(basic("x-token", plaintext))
    assert principal is not None and principal.kind == "api_key" and principal.username == "jane"


async def test_basic_password_is_refused_unless_enabled(auth: AuthService) -> None:
    await auth.users.create("jane", password="pw-of-jane")
    with pytest.raises(AuthenticationError, match="not accepted"):
        await auth.authenticator.authenticate(basic("jane", "pw-of-jane"))


async def test_basic_password_works_when_enabled(
    redis: aioredis.Redis,
    make_settings: Callable[..., Settings],
    make_auth_settings: Callable[..., AuthSettings],
) -> None:
    auth = await create_auth_service(
        redis, make_settings(), make_auth_settings(allow_password_basic=True)
    )
    await auth.users.create("jane", password="pw-of-jane")
    principal = await auth.authenticator.authenticate(basic("jane", "pw-of-jane"))
    assert principal is not None and principal.username == "jane" and principal.kind == "user"
    with pytest.raises(AuthenticationError, match="invalid username or password"):
        await auth.authenticator.authenticate(basic("jane", "wrong"))
    with pytest.raises(AuthenticationError, match="malformed"):
        await auth.authenticator.authenticate("Basic !!!")


async def test_password_login_returns_a_working_token_pair(auth: AuthService) -> None:
    await auth.users.create("jane", password="pw-of-jane")
    pair = await auth.authenticator.password_login("jane", "pw-of-jane")
    assert (await auth.tokens.verify_access_token(pair.access_token)).sub == "jane"
    pair = await auth.authenticator.password_login(" Jane ", "pw-of-jane")
    assert (await auth.tokens.verify_access_token(pair.access_token)).sub == "jane"
    with pytest.raises(AuthenticationError, match="invalid username or password"):
        await auth.authenticator.password_login("jane", "wrong")
    with pytest.raises(AuthenticationError, match="invalid username or password"):
        await auth.authenticator.password_login("nobody", "pw-of-jane")


async def test_password_login_locks_after_threshold_even_for_the_right_password(
    redis: aioredis.Redis,
    make_settings: Callable[..., Settings],
    make_auth_settings: Callable[..., AuthSettings],
) -> None:
    auth = await create_auth_service(
        redis, make_settings(), make_auth_settings(login_lockout_threshold=3)
    )
    await auth.users.create("jane", password="pw-of-jane")
    for _ in range(2):
        with pytest.raises(AuthenticationError) as refused:
            await auth.authenticator.password_login("jane", "guess")
        assert not isinstance(refused.value, LoginLocked)
    with pytest.raises(LoginLocked) as locked:
        await auth.authenticator.password_login("jane", "guess")
    assert locked.value.retry_after == 300
    with pytest.raises(LoginLocked) as still_locked:
        await auth.authenticator.password_login("jane", "pw-of-jane")
    assert 0 < still_locked.value.retry_after <= 300
