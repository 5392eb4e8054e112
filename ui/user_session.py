"""A browser's sign-in at the gateway: the token pair lives in the browser session's server-side
storage (NiceGUI's `app.storage.user`), never in the page, and is refreshed shortly before the
access token expires.

Refresh tokens work once (a second use revokes the whole login), so one browser session
refreshes under one lock, and whoever waited on it uses the pair the first one got.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import weakref
from collections.abc import AsyncIterator, MutableMapping
from typing import Any

import httpx

from gobuild.ui.gateway_api import ApiCallError, GatewayApi

LOGIN_KEY = "gateway_login"
# Refresh when the access token has less than this left.
REFRESH_MARGIN_SECONDS = 60.0


class SignInRequired(Exception):
    """There is no sign-in, or it ended (expired, revoked, signed out elsewhere)."""


class SessionLocks:
    """One refresh lock per browser session, dropped when nobody holds it."""

    def __init__(self) -> None:
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()

    def lock(self, session_id: str) -> asyncio.Lock:
        lock = self._locks.get(session_id)
        if lock is None:
            lock = asyncio.Lock()
            self._locks[session_id] = lock
        return lock


class UserSession:
    """The gateway API as the signed-in user of one browser session."""

    def __init__(
        self, api: GatewayApi, store: MutableMapping[str, Any], lock: asyncio.Lock
    ) -> None:
        self.api = api
        self._store = store
        self._lock = lock

    @property
    def signed_in(self) -> bool:
        return isinstance(self._store.get(LOGIN_KEY), dict)

    @property
    def username(self) -> str:
        login = self._store.get(LOGIN_KEY) or {}
        return str(login.get("username", ""))

    async def sign_in_with_password(self, username: str, password: str) -> None:
        response = await self.api.call(
            "POST", "/api/auth/login", json={"username": username, "password": password}
        )
        await self._keep(response.json())

    async def sign_in_with_code(self, code: str) -> None:
        """Trade the one-time code of a GitHub / GitLab sign-in for a token pair."""
        response = await self.api.call("POST", "/api/auth/exchange", json={"code": code})
        await self._keep(response.json())

    async def sign_out(self) -> None:
        """Revoke the login at the gateway, then forget it here (also when the gateway fails)."""
        login = self._store.get(LOGIN_KEY)
        try:
            if isinstance(login, dict):
                await self.api.call(
                    "POST",
                    "/api/auth/logout",
                    token=login["access_token"],
                    json={"refresh_token": login["refresh_token"]},
                )
        except ApiCallError:
            pass  # an expired access token cannot log out; its refresh token is forgotten
        finally:
            self.forget()

    def forget(self) -> None:
        self._store.pop(LOGIN_KEY, None)

    async def token(self) -> str:
        """A current access token, refreshed first when it is about to expire."""
        login = self._login()
        if float(login["expires_at"]) - time.time() > REFRESH_MARGIN_SECONDS:
            return str(login["access_token"])
        async with self._lock:
            login = self._login()  # another task may have refreshed meanwhile
            if float(login["expires_at"]) - time.time() > REFRESH_MARGIN_SECONDS:
                return str(login["access_token"])
            return await self._refresh(login)

    async def call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """One API call as the user; a refused token is refreshed once before giving up."""
        token = await self.token()
        try:
            return await self.api.call(method, path, token=token, **kwargs)
        except ApiCallError as exc:
            if exc.status != 401:
                raise
        token = await self._refresh_after_refusal(token)
        try:
            return await self.api.call(method, path, token=token, **kwargs)
        except ApiCallError as exc:
            if exc.status == 401:
                self.forget()
                raise SignInRequired(exc.message) from exc
            raise

    async def get(self, path: str, **params: Any) -> Any:
        return (await self.call("GET", path, params=params or None)).json()

    async def post(self, path: str, body: Any = None) -> Any:
        response = await self.call("POST", path, json=body)
        return response.json() if response.content else None

    async def patch(self, path: str, body: Any) -> Any:
        return (await self.call("PATCH", path, json=body)).json()

    async def delete(self, path: str) -> None:
        await self.call("DELETE", path)

    @contextlib.asynccontextmanager
    async def stream(self, path: str, **params: Any) -> AsyncIterator[httpx.Response]:
        """A streamed GET as the user (a log, an artifact)."""
        token = await self.token()
        try:
            async with self.api.stream(path, token=token, params=params or None) as response:
                yield response
                return
        except ApiCallError as exc:
            if exc.status != 401:
                raise
        token = await self._refresh_after_refusal(token)
        async with self.api.stream(path, token=token, params=params or None) as response:
            yield response

    def _login(self) -> dict[str, Any]:
        login = self._store.get(LOGIN_KEY)
        if not isinstance(login, dict):
            raise SignInRequired("not signed in")
        return login

    async def _refresh_after_refusal(self, refused: str) -> str:
        async with self._lock:
            login = self._login()
            if login["access_token"] != refused:
                return str(login["access_token"])
            return await self._refresh(login)

    async def _refresh(self, login: dict[str, Any]) -> str:
        try:
            response = await self.api.call(
                "POST", "/api/auth/refresh", json={"refresh_token": login["refresh_token"]}
            )
        except ApiCallError as exc:
            if exc.status in (401, 422):
                self.forget()
                raise SignInRequired(exc.message) from exc
            raise
        pair = response.json()
        self._store[LOGIN_KEY] = {**self._pair(pair), "username": login.get("username", "")}
        return str(pair["access_token"])

    async def _keep(self, pair: dict[str, Any]) -> None:
        me = (await self.api.call("GET", "/api/me", token=pair["access_token"])).json()
        self._store[LOGIN_KEY] = {**self._pair(pair), "username": me.get("username", "")}

    @staticmethod
    def _pair(pair: dict[str, Any]) -> dict[str, Any]:
        return {
            "access_token": pair["access_token"],
            "refresh_token": pair["refresh_token"],
            "expires_at": time.time() + float(pair.get("expires_in", 0)),
        }
