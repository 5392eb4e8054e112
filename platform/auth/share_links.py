"""Share links: a signed, expiring, revocable token granting read-only access to one build.

The token is a JWT (HS256, a key derived for share links only) naming the build and the link
id; the link record in Redis must still exist, so deleting it revokes the link at once.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

import redis.asyncio as aioredis
from joserfc import jwt
from joserfc.errors import ExpiredTokenError, JoseError
from pydantic import BaseModel

from gobuild.platform.auth.signing import SHARE_LINK_PURPOSE, derive_key
from gobuild.platform.auth.users import UserError
from gobuild.platform.config import AuthSettings
from gobuild.platform.records import new_id
from gobuild.platform.stores import keys

log = logging.getLogger(__name__)

SHARE_LINK_ALGORITHM = "HS256"
SHARE_LINK_AUDIENCE = "gobuild-share"


class ShareLink(BaseModel):
    id: str
    build_id: str
    # None for links made before links were listed by project.
    project_id: str | None = None
    created_by: str
    created_at: datetime
    expires_at: datetime


ShareLinkStatus = Literal["valid", "expired", "revoked", "invalid"]


@dataclass(frozen=True)
class ShareLinkCheck:
    """What a token is worth: `valid` (with its link), `expired`, `revoked`, or `invalid`
    (not a share link of this instance: forged, altered or garbage)."""

    status: ShareLinkStatus
    link: ShareLink | None = None


class ShareLinkStore:
    """Create, verify, list and revoke share links."""

    def __init__(self, redis: aioredis.Redis, settings: AuthSettings, secret: str) -> None:
        self.redis = redis
        self.settings = settings
        self.key = derive_key(secret, SHARE_LINK_PURPOSE)

    async def create(
        self,
        build_id: str,
        created_by: str,
        ttl: int | None = None,
        *,
        project_id: str | None = None,
    ) -> tuple[ShareLink, str]:
        """A new link and its token. `ttl` defaults to GOBUILD_SHARE_LINK_TTL_SECONDS; with
        `project_id` the link is listed among the project's (`list_for_projects`)."""
        ttl = self.settings.share_link_ttl_seconds if ttl is None else ttl
        if not 1 <= ttl <= self.settings.share_link_max_ttl_seconds:
            raise UserError(
                f"a share link lasts 1 to {self.settings.share_link_max_ttl_seconds} seconds"
            )
        now = int(time.time())
        link = ShareLink(
            id=new_id("s_"),
            build_id=build_id,
            project_id=project_id,
            created_by=created_by,
            created_at=datetime.fromtimestamp(now, UTC),
            expires_at=datetime.fromtimestamp(now + ttl, UTC),
        )
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.set(keys.key_share_link(link.id), link.model_dump_json(), ex=ttl)
            pipe.sadd(keys.key_build_share_links(build_id), link.id)
            pipe.expire(keys.key_build_share_links(build_id), ttl, gt=True)
            pipe.expire(keys.key_build_share_links(build_id), ttl, nx=True)
            if project_id is not None:
                pipe.zadd(keys.key_project_share_links(project_id), {link.id: now + ttl})
            await pipe.execute()
        log.info("share link created", extra={"build_id": build_id, "link_id": link.id})
        return link, self.token_for(link)

    def token_for(self, link: ShareLink) -> str:
        """The link's token (the same claims, signed again: tokens are not stored)."""
        claims = {
            "jti": link.id,
            "bid": link.build_id,
            "iat": int(link.created_at.timestamp()),
            "exp": int(link.expires_at.timestamp()),
            "iss": self.settings.jwt_issuer,
            "aud": SHARE_LINK_AUDIENCE,
        }
        return jwt.encode({"alg": SHARE_LINK_ALGORITHM}, claims, self.key)

    async def verify(self, token: str) -> str | None:
        """The build id a valid, unexpired, unrevoked token grants; else None."""
        checked = await self.check(token)
        return checked.link.build_id if checked.link is not None else None

    async def check(self, token: str) -> ShareLinkCheck:
        """Whether a token is valid, and if not, whether it expired, was revoked or never was
        a share link of this instance."""
        try:
            decoded = jwt.decode(token, self.key, algorithms=[SHARE_LINK_ALGORITHM])
            claims = decoded.claims
            try:
                self._validate_claims(claims)
            except ExpiredTokenError:
                # Signed by this instance and expired: the rest of it must still hold.
                self._validate_claims(claims, now=int(claims["exp"]) - 1)
                return ShareLinkCheck("expired")
        except (JoseError, ValueError, TypeError, KeyError):
            return ShareLinkCheck("invalid")
        link_id, build_id = claims["jti"], claims["bid"]
        if not isinstance(link_id, str) or not isinstance(build_id, str):
            return ShareLinkCheck("invalid")
        link = await self.get(link_id)
        if link is None:
            # The signature is this instance's and it has not expired: only a revoke removes it.
            return ShareLinkCheck("revoked")
        if link.build_id != build_id:
            return ShareLinkCheck("invalid")
        return ShareLinkCheck("valid", link)

    def _validate_claims(self, claims: dict[str, object], now: int | None = None) -> None:
        jwt.JWTClaimsRegistry(
            now=now,
            iss={"essential": True, "value": self.settings.jwt_issuer},
            aud={"essential": True, "value": SHARE_LINK_AUDIENCE},
            exp={"essential": True},
            jti={"essential": True},
            bid={"essential": True},
        ).validate(claims)

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

    async def list_for_projects(self, project_ids: list[str]) -> list[ShareLink]:
        """The live links of the projects' builds, newest first."""
        now = int(time.time())
        links: list[ShareLink] = []
        for project_id in project_ids:
            index = keys.key_project_share_links(project_id)
            await self.redis.zremrangebyscore(index, "-inf", now)
            ids = await self.redis.zrange(index, 0, -1)
            if not ids:
                continue
            raws = await self.redis.mget([keys.key_share_link(i) for i in ids])
            found = [ShareLink.model_validate_json(raw) for raw in raws if raw]
            gone = set(ids) - {link.id for link in found}
            if gone:
                await self.redis.zrem(index, *gone)
            links.extend(found)
        return sorted(links, key=lambda link: link.created_at, reverse=True)

    async def revoke(self, token_id: str) -> bool:
        """Revoke a link by its id; its token stops working at once."""
        link = await self.get(token_id)
        if link is None:
            return False
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.delete(keys.key_share_link(token_id))
            pipe.srem(keys.key_build_share_links(link.build_id), token_id)
            if link.project_id is not None:
                pipe.zrem(keys.key_project_share_links(link.project_id), token_id)
            await pipe.execute()
        log.info("share link revoked", extra={"build_id": link.build_id, "link_id": token_id})
        return True
