"""A browser session's sign-in: refreshed before the access token expires, once even when many
calls need it at the same moment (a refresh token works once), and forgotten when it ends."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import httpx
import pytest

from gobuild.ui.gateway_api import GatewayApi
from gobuild.ui.user_session import LOGIN_KEY, SignInRequired, UserSession


class Gateway:
    """The token routes of the gateway, with refresh tokens that work once."""

    def __init__(self) -> None:
        self.refreshes = 0
        self.valid_refresh = "refresh-0"
        self.valid_access = "access-0"

    def handle(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/api/auth/refresh":
            body = json.loads(request.content)
            if body["refresh_token"] != self.valid_refresh:
                return httpx.Response(401, json={"error": "invalid refresh token"})
            self.refreshes += 1
            self.valid_refresh = f"refresh-{self.refreshes}"
            self.valid_access = f"access-{self.refreshes}"
            pair = {"access_token": self.valid_access, "refresh_token": self.valid_refresh}
            return httpx.Response(200, json={**pair, "expires_in": 900})
        if request.headers.get("Authorization") != f"Bearer {self.valid_access}":
            return httpx.Response(401, json={"error": "invalid credentials"})
        return httpx.Response(200, json={"ok": True})


def session_for(gateway: Gateway, expires_in: float) -> tuple[UserSession, dict[str, Any]]:
    api = GatewayApi("http://gateway.test")
    api._http = httpx.AsyncClient(
        base_url=api.base_url, transport=httpx.MockTransport(gateway.handle)
    )
    store: dict[str, Any] = {
        LOGIN_KEY: {
            "access_token": gateway.valid_access,
            "refresh_token": gateway.valid_refresh,
            "expires_at": time.time() + expires_in,
            "username": "alice",
        }
    }
    return UserSession(api, store, asyncio.Lock()), store


async def test_a_token_about_to_expire_is_refreshed_once_for_many_calls() -> None:
    gateway = Gateway()
    session, store = session_for(gateway, expires_in=5)

    answers = await asyncio.gather(*(session.get("/api/me") for _ in range(5)))

    assert answers == [{"ok": True}] * 5
    assert gateway.refreshes == 1
    assert store[LOGIN_KEY]["access_token"] == "access-1"
    assert store[LOGIN_KEY]["username"] == "alice"


async def test_a_refused_token_is_refreshed_and_the_call_made_again() -> None:
    gateway = Gateway()
    session, _ = session_for(gateway, expires_in=600)
    gateway.valid_access = "revoked-elsewhere"

    assert await session.get("/api/me") == {"ok": True}
    assert gateway.refreshes == 1


async def test_an_ended_login_is_forgotten_and_asks_for_sign_in() -> None:
    gateway = Gateway()
    session, store = session_for(gateway, expires_in=5)
    gateway.valid_refresh = "used-up"

    with pytest.raises(SignInRequired):
        await session.get("/api/me")
    assert LOGIN_KEY not in store
    assert not session.signed_in
