"""Browser sessions: the server side of the sign-in cookie, so logging out ends them at once.

The cookie carries only a random session id (signed by quart-auth); Redis maps the SHA-256 of
that id to the username until the session expires or is ended.
"""

from __future__ import annotations

import hashlib
import logging
import secrets

import redis.asyncio as aioredis

from gobuild.platform.config import AuthSettings
from gobuild.platform.stores import keys

log = logging.getLogger(__name__)

# A session id is 43 URL-safe characters; anything else is not looked up.
_MAX_SESSION_ID_LENGTH = 64


def _hash(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


class BrowserSessionStore:
    """Open, resolve and end cookie sessions."""

    def __init__(self, redis: aioredis.Redis, settings: AuthSettings) -> None:
        self.redis = redis
        self.settings = settings

    async def open(self, username: str) -> str:
        """A new session id for `username`, valid for GOBUILD_SESSION_TTL_SECONDS."""
        session_id = secrets.token_urlsafe(32)
        await self.redis.set(
            keys.key_browser_session(_hash(session_id)),
            username,
            ex=self.settings.session_ttl_seconds,
        )
        log.info("browser session opened", extra={"username": username})
        return session_id

    async def username_of(self, session_id: str) -> str | None:
        """The username of a live session; None when unknown, ended or expired."""
        if not session_id or len(session_id) > _MAX_SESSION_ID_LENGTH:
            return None
        return await self.redis.get(keys.key_browser_session(_hash(session_id)))

    async def end(self, session_id: str) -> bool:
        """End a session; its cookie stops working at once."""
        if not session_id or len(session_id) > _MAX_SESSION_ID_LENGTH:
            return False
        return bool(await self.redis.delete(keys.key_browser_session(_hash(session_id))))
