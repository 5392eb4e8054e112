"""The instance's signing secret and the keys derived from it for each kind of token."""

from __future__ import annotations

import hashlib
import hmac
import secrets

import redis.asyncio as aioredis
from joserfc.jwk import OctKey

from gobuild.platform.config import AuthSettings
from gobuild.platform.stores import keys

ACCESS_TOKEN_PURPOSE = "access-token"
SHARE_LINK_PURPOSE = "share-link"
BROWSER_SESSION_PURPOSE = "browser-session"


async def load_signing_secret(redis: aioredis.Redis, settings: AuthSettings) -> str:
    """GOBUILD_JWT_SECRET, or the secret generated once and kept in Redis.

    The first gateway process to start stores a random secret (SET NX); every other process
    reads the same one, so they all accept each other's tokens.
    """
    if settings.jwt_secret:
        return settings.jwt_secret
    await redis.set(keys.KEY_JWT_SECRET, secrets.token_urlsafe(48), nx=True)
    secret = await redis.get(keys.KEY_JWT_SECRET)
    if not secret:
        raise RuntimeError(f"Redis lost {keys.KEY_JWT_SECRET} right after it was written")
    return secret


def derive_secret(secret: str, purpose: str) -> bytes:
    """32 bytes derived from the instance secret for one purpose only (HMAC-SHA256)."""
    return hmac.new(secret.encode(), purpose.encode(), hashlib.sha256).digest()


def derive_key(secret: str, purpose: str) -> OctKey:
    """A separate HS256 key per purpose, so a token made for one use is never valid for another."""
    return OctKey.import_key(derive_secret(secret, purpose))
