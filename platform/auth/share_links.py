"""Share links: a signed, expiring, revocable token granting read-only access to one build.

The token is a JWT (HS256, a key derived for share links only) naming the build and the link
id; the link record in Redis must still exist, so deleting it revokes the link at once.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime

import redis.asyncio as aioredis
from joserfc import jwt
from joserfc.errors import JoseError
from pydantic import BaseModel

from gobuild.platform.auth import redis_keys as keys
from gobuild.platform.auth.signing import SHARE_LINK_PURPOSE, derive_key
from gobuild.platform.auth.users import UserError
from gobuild.platform.config import AuthSettings
from gobuild.platform.records import new_id

log = logging.getLogger(__name__)

SHARE_LINK_ALGORITHM = "HS256"
SHARE_LINK_AUDIENCE = "gobuild-share"


class ShareLink(BaseModel):
    id: str
    build_id: str
    created_by: str
    created_at: datetime
    expires_at: datetime


class ShareLinkStore:
    """Create, verify, list and revoke share links."""

    def __init__(self, redis: aioredis.Redis, settings: AuthSettings, secret: str) -> None:
        self.redis = redis
        self.settings = settings
        self.key = derive_key(secret, SHARE_LINK_PURPOSE)

    async def create(
        self, build_id: str, created_by: str, ttl: int | None = None
    ) -> tuple[ShareLink, str]:
        """A new link and its token. `ttl` defaults to GOBUILD_SHARE_LINK_TTL_SECONDS."""
        ttl = self.settings.share_link_ttl_seconds if ttl is None else ttl
        if not 1 <= ttl <= self.settings.share_link_max_ttl_seconds:
            raise UserError(
                f"a share link lasts 1 to {self.settings.share_link_max_ttl_seconds} seconds"
            )
        now = int(time.time())
        link = ShareLink(
            id=new_id("s_"),
            build_id=build_id,
            created_by=created_by,
            created_at=datetime.fromtimestamp(now, UTC),
            expires_at=datetime.fromtimestamp(now + ttl, UTC),
        )
        claims = {
            "jti": link.id,
            "bid": build_id,
            "iat": now,
            "exp": now + ttl,
            "iss": self.settings.jwt_issuer,
            "aud": SHARE_LINK_AUDIENCE,
        }
        token = jwt.encode({"alg": SHARE_LINK_ALGORITHM}, claims, self.key)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.set(keys.key_share_link(link.id), link.model_dump_json(), ex=ttl)
            pipe.sadd(keys.key_build_share_links(build_id), link.id)
            pipe.expire(keys.key_build_share_links(build_id), ttl, gt=True)
            pipe.expire(keys.key_build_share_links(build_id), ttl, nx=True)
            await pipe.execute()
        log.info("share link created", extra={"build_id": build_id, "link_id": link.id})
        return link, token

    async def verify(self, token: str) -> str | None:
        """The build id a valid, unexpired, unrevoked token grants; else None."""
        try:
            decoded = jwt.decode(token, self.key, algorithms=[SHARE_LINK_ALGORITHM])
            jwt.JWTClaimsRegistry(
                iss={"essential": True, "value": self.settings.jwt_issuer},
                aud={"essential": True, "value": SHARE_LINK_AUDIENCE},
                exp={"essential": True},
                jti={"essential": True},
                bid={"essential": True},
            ).validate(decoded.claims)
        except (JoseError, ValueError, TypeError):
            return None
        link_id, build_id = decoded.claims["jti"], decoded.claims["bid"]
        if not isinstance(link_id, str) or not isinstance(build_id, str):
            return None
        link = await self.get(link_id)
        if link is None or link.build_id != build_id:
            return None
        return build_id

    async def get(self, link_id: str) -> ShareLink | None:
        raw = await self.redis.get(keys.key_share_link(link_id))
        return ShareLink.model_validate_json(raw) if raw else None

    async def list_for_build(self, build_id: str) -> list[ShareLink]:
        """The build's live links, newest first (expired and revoked ones are dropped)."""
        ids = await self.redis.smembers(keys.key_build_share_links(build_id))
        links = [link for link in [await self.get(i) for i in ids] if link is not None]
        gone = set(ids) - {link.id for link in links}
        if gone:
            await self.redis.srem(keys.key_build_share_links(build_id), *gone)
        return sorted(links, key=lambda link: link.created_at, reverse=True)

    async def revoke(self, token_id: str) -> bool:
        """Revoke a link by its id; its token stops working at once."""
        link = await self.get(token_id)
        if link is None:
            return False
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.delete(keys.key_share_link(token_id))
            pipe.srem(keys.key_build_share_links(link.build_id), token_id)
            await pipe.execute()
        log.info("share link revoked", extra={"build_id": link.build_id, "link_id": token_id})
        return True
