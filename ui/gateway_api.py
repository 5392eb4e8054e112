"""The dashboard's one HTTP client of the gateway's API (server to server): every page reads and
acts through it, with the signed-in user's access token, so the gateway alone decides what a
user may see and do."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import httpx

# Short API calls; a log or an artifact streams for as long as it takes.
CALL_TIMEOUT = httpx.Timeout(15.0, connect=5.0)
STREAM_TIMEOUT = httpx.Timeout(None, connect=5.0)


class ApiCallError(Exception):
    """The gateway answered with an error (`{"error", "detail"}`), or could not be reached."""

    def __init__(self, status: int, error: str, detail: Any = None) -> None:
        super().__init__(f"{status} {error}")
        self.status = status
        self.error = error
        self.detail = detail

    @property
    def message(self) -> str:
        """What to tell the user: the gateway's error and, if it is text, its detail."""
        if isinstance(self.detail, str) and self.detail:
            return f"{self.error}: {self.detail}"
        if isinstance(self.detail, list) and self.detail:
            fields = "; ".join(
                f"{item.get('field', '')}: {item.get('message', '')}"
                for item in self.detail
                if isinstance(item, dict)
            )
            return f"{self.error}: {fields}" if fields else self.error
        return self.error


def error_of(response: httpx.Response) -> ApiCallError:
    try:
        body = response.json()
    except ValueError:
        body = {}
    if not isinstance(body, dict):
        body = {}
    error = str(body.get("error") or response.reason_phrase or "request failed")
    return ApiCallError(response.status_code, error, body.get("detail"))


class GatewayApi:
    """A pooled httpx client of the gateway, opened on startup and closed on shutdown."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url.rstrip("/")
        self._http: httpx.AsyncClient | None = None

    async def start(self) -> None:
        self._http = httpx.AsyncClient(base_url=self.base_url, timeout=CALL_TIMEOUT)

    async def stop(self) -> None:
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    @property
    def http(self) -> httpx.AsyncClient:
        if self._http is None:
            raise RuntimeError("the gateway client is used before the dashboard started")
        return self._http

    async def call(
        self,
        method: str,
        path: str,
        *,
        token: str | None = None,
        json: Any = None,
        params: dict[str, Any] | None = None,
    ) -> httpx.Response:
        """Send one request; raises ApiCallError for an error status or an unreachable gateway."""
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        try:
            response = await self.http.request(
                method, path, json=json, params=params, headers=headers
            )
        except httpx.HTTPError as exc:
            raise ApiCallError(503, "the gateway is unavailable", str(exc)) from exc
        if response.status_code >= 400:
            raise error_of(response)
        return response

    @contextlib.asynccontextmanager
    async def stream(
        self, path: str, *, token: str | None = None, params: dict[str, Any] | None = None
    ) -> AsyncIterator[httpx.Response]:
        """A GET whose body is read as it arrives; raises ApiCallError for an error status."""
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        request = self.http.build_request(
            "GET", path, params=params, headers=headers, timeout=STREAM_TIMEOUT
        )
        try:
            response = await self.http.send(request, stream=True)
        except httpx.HTTPError as exc:
            raise ApiCallError(503, "the gateway is unavailable", str(exc)) from exc
        try:
            if response.status_code >= 400:
                await response.aread()
                raise error_of(response)
            yield response
        finally:
            await response.aclose()
