"""Browser sessions behind the sign-in cookie, and telling password attempts from keys."""

from __future__ import annotations

import base64

import pytest

from gobuild.platform.auth.authentication import AuthenticationError, LoginLocked
from gobuild.platform.auth.service import AuthService
from tests.auth.conftest import ADMIN_KEY


def basic(username: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()


async def test_a_session_names_its_user_until_it_is_ended(auth: AuthService) -> None:
    session_id = await auth.sessions.open("jane")
    assert len(session_id) >= 43
    assert await auth.sessions.username_of(session_id) == "jane"
    assert await auth.sessions.end(session_id) is True
    assert await auth.sessions.username_of(session_id) is None
    assert await auth.sessions.end(session_id) is False


async def test_unknown_or_oversized_session_ids_name_nobody(auth: AuthService) -> None:
    for session_id in ("", "nope", "x" * 10_000):
        assert await auth.sessions.username_of(session_id) is None


async def test_sessions_expire_with_the_configured_lifetime(auth: AuthService) -> None:
    session_id = await auth.sessions.open("jane")
    ttls = [await auth.sessions.redis.ttl(k) async for k in auth.sessions.redis.scan_iter()]
    assert auth.settings.session_ttl_seconds in ttls
    assert await auth.sessions.username_of(session_id) == "jane"


async def test_cookie_secret_is_derived_and_not_the_signing_secret(auth: AuthService) -> None:
    assert len(auth.cookie_secret) == 32
    assert auth.cookie_secret != auth.settings.jwt_secret.encode()


async def test_password_attempts_are_told_apart_from_keys(auth: AuthService) -> None:
    is_password = auth.authenticator.is_password_attempt
    assert is_password(basic("jane", "hunter22"))
    assert not is_password(basic("jane", ADMIN_KEY))
    assert not is_password(basic("jane", "gb_abc"))
    assert not is_password("Bearer something")
    assert not is_password("Basic !!!")
    assert not is_password(None)


async def test_check_password_counts_failures_towards_the_lockout(auth: AuthService) -> None:
    await auth.users.create("jane", password="pw-of-jane")
    assert (await auth.authenticator.check_password("jane", "pw-of-jane")).username == "jane"
    for _ in range(auth.settings.login_lockout_threshold - 1):
        with pytest.raises(AuthenticationError) as caught:
            await auth.authenticator.check_password("jane", "wrong")
        assert not isinstance(caught.value, LoginLocked)
    with pytest.raises(LoginLocked):
        await auth.authenticator.check_password("jane", "wrong")
    with pytest.raises(LoginLocked):
        await auth.authenticator.check_password("jane", "pw-of-jane")
