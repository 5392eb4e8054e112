"""POSTing a notification to a URL: the address policy checked right before, no redirects, a
timeout, and the answer judged as delivered, worth retrying or not.

A URL a user gave (a webhook, a project's forge URL) is resolved and refused when any address
is internal (`repo_url.check_public_url`) unless GOBUILD_HOOKS_ALLOW_PRIVATE_ADDRESSES is on;
the request then goes to the checked address itself (Host header and TLS name kept), so a
second DNS answer cannot point it elsewhere (DNS rebinding).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

import httpx

from gobuild.platform.notifications.outcome import Outcome, delivered, give_up, retry
from gobuild.platform.repo_url import (
    InvalidRepoUrl,
    Resolver,
    check_public_url,
    resolve_host,
)

# 408 Request Timeout and 429 Too Many Requests are worth another try, like 5xx.
RETRYABLE_CLIENT_ERRORS = frozenset({408, 429})
# How much of a receiver's answer is kept in the delivery log.
MAX_ERROR_TEXT = 200


@dataclass(frozen=True)
class PinnedRequest:
    """Where the request really goes: the URL with the checked address, the Host header and
    the name TLS verifies."""

    url: str
    host_header: str | None = None
    tls_name: str | None = None


class OutgoingHttp:
    """Sends notification requests with one shared client (no redirects followed)."""

    def __init__(
        self,
        client: httpx.AsyncClient,
        *,
        timeout: float,
        allow_private_addresses: bool,
        resolve: Resolver = resolve_host,
    ) -> None:
        self._client = client
        self._timeout = timeout
        self._allow_private = allow_private_addresses
        self._resolve = resolve

    async def post(
        self, url: str, *, content: bytes, headers: Mapping[str, str], checked: bool
    ) -> Outcome:
        """POST `content` (the whole attempt within the timeout); `checked`: the URL is a
        user's, the address policy applies."""
        try:
            target = await self._pin(url) if checked and not self._allow_private else None
        except InvalidRepoUrl as exc:
            return give_up(f"refused: {exc}")
        except (OSError, TimeoutError) as exc:
            return retry(f"cannot resolve {urlsplit(url).hostname!r}: {exc or 'timed out'}")
        request_headers = dict(headers)
        extensions = {}
        if target is not None:
            url = target.url
            if target.host_header:
                request_headers["Host"] = target.host_header
            if target.tls_name:
                extensions["sni_hostname"] = target.tls_name
        request = self._client.build_request(
            "POST", url, content=content, headers=request_headers, extensions=extensions
        )
        try:
            async with asyncio.timeout(self._timeout):
                response = await self._client.send(request, stream=True, follow_redirects=False)
                try:
                    answer = await _read_start(response)
                finally:
                    await response.aclose()
        except (httpx.TimeoutException, TimeoutError):
            return retry(f"no answer within {self._timeout:g} s")
        except httpx.TransportError as exc:
            return retry(f"connection failed: {type(exc).__name__}: {exc}"[:MAX_ERROR_TEXT])
        return judge(response.status_code, answer)

    async def _pin(self, url: str) -> PinnedRequest:
        checked = await check_public_url(url, must_resolve=True, resolve=self._resolve)
        parts = urlsplit(url)
        address = checked.addresses[0]
        userinfo, at, host_header = parts.netloc.rpartition("@")
        shown = f"[{address}]" if ":" in address else address
        netloc = f"{userinfo}{at}{shown}" + (f":{parts.port}" if parts.port else "")
        tls_name = checked.host if parts.scheme.lower() == "https" else None
        return PinnedRequest(
            url=urlunsplit(parts._replace(netloc=netloc)),
            host_header=host_header,
            tls_name=tls_name,
        )


async def _read_start(response: httpx.Response) -> str:
    """The first MAX_ERROR_TEXT bytes of the answer (a receiver's body is not read whole)."""
    start = b""
    async for chunk in response.aiter_bytes():
        start += chunk
        if len(start) >= MAX_ERROR_TEXT:
            break
    return start[:MAX_ERROR_TEXT].decode("utf-8", "replace")


def judge(code: int, answer: str) -> Outcome:
    """2xx: delivered; 5xx, 408, 429: retry; anything else (redirects too): given up."""
    if 200 <= code < 300:
        return delivered(code)
    error = f"HTTP {code}: {answer}".strip()
    if code >= 500 or code in RETRYABLE_CLIENT_ERRORS:
        return retry(error, code)
    return give_up(error, code)
