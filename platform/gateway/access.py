"""Who may call the API: the one authentication layer of the gateway.

For now a single credential exists, `GOBUILD_ADMIN_API_KEY`, accepted as
`Authorization: Bearer <key>` or as the password of HTTP Basic (`curl -u admin:<key>`).
"""

from __future__ import annotations

import base64
import binascii
import hmac

from quart import request

from gobuild.platform.gateway.context import gateway
from gobuild.platform.gateway.errors import ApiError

_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="gobuild", Basic realm="gobuild"'}


def credential_from_header(header: str | None) -> str | None:
    """The secret carried by an Authorization header (Bearer token or Basic password)."""
    if not header:
        return None
    scheme, _, value = header.strip().partition(" ")
    value = value.strip()
    if scheme.lower() == "bearer" and value:
        return value
    if scheme.lower() == "basic" and value:
        try:
            decoded = base64.b64decode(value, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None
        _, sep, password = decoded.partition(":")
        return password if sep else None
    return None


def is_admin_key(candidate: str | None, admin_key: str) -> bool:
    if not candidate or not admin_key:
        return False
    return hmac.compare_digest(candidate.encode(), admin_key.encode())


async def require_api_credentials() -> None:
    """`before_request` hook of the API blueprint: 401 unless a valid credential is given."""
    if request.method == "OPTIONS":
        return
    candidate = credential_from_header(request.headers.get("Authorization"))
    if candidate is None:
        raise ApiError(
            401,
            "authentication required",
            "send an API key as Bearer token or Basic password",
            _CHALLENGE,
        )
    if not is_admin_key(candidate, gateway().settings.admin_api_key):
        raise ApiError(401, "invalid credentials", None, _CHALLENGE)
