"""Access tokens (short-lived JWTs) and refresh tokens (opaque, rotated, revocable by family).

A login starts a refresh token *family*. Each refresh uses up the presented token and issues
the next one in the same family; presenting a used token again means it was stolen (or
replayed), so the whole family is revoked and every session of that login ends. Access tokens
carry their family as the `sid` claim, so revoking a family (reuse, logout) also refuses the
access tokens issued with it, at once rather than when they expire.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import time
import uuid
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import redis.asyncio as aioredis
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import OctKey
from pydantic import BaseModel

from gobuild.platform.auth.permissions import InstanceRole
from gobuild.platform.auth.signing import ACCESS_TOKEN_PURPOSE, derive_key
from gobuild.platform.auth.users import UnknownUser, UserStore
from gobuild.platform.config import AuthSettings
from gobuild.platform.stores import keys

log = logging.getLogger(__name__)

ACCESS_TOKEN_ALGORITHM = "HS256"


class InvalidToken(Exception):
    """A token that must not be accepted; the message is safe to show the client."""


@dataclass(frozen=True)
class AccessClaims:
    """The validated claims of an access token."""

    sub: str
    roles: list[str]
    projects: dict[str, str]
    iat: int
    exp: int
    jti: str
    iss: str
    aud: str
    # The refresh token family (the login) the token was issued with; None for other tokens.
    sid: str | None = None

    @property
    def is_admin(self) -> bool:
        return InstanceRole.ADMIN.value in self.roles


class TokenPair(BaseModel):
    """What a login or a refresh returns to the client."""

    access_token: str
    refresh_token: str
    token_type: Literal["bearer"] = "bearer"
    expires_in: int


def access_token_key(secret: str) -> OctKey:
    return derive_key(secret, ACCESS_TOKEN_PURPOSE)


def encode_access_token(
    key: OctKey,
    settings: AuthSettings,
    username: str,
    roles: list[str],
    projects: dict[str, str],
    now: int | None = None,
    sid: str | None = None,
) -> tuple[str, AccessClaims]:
    issued_at = int(time.time()) if now is None else now
    claims = AccessClaims(
        sub=username,
        roles=list(roles),
        projects=dict(projects),
        iat=issued_at,
        exp=issued_at + settings.access_token_ttl_seconds,
        jti=uuid.uuid4().hex,
        iss=settings.jwt_issuer,
        aud=settings.jwt_audience,
        sid=sid,
    )
    payload = {name: value for name, value in asdict(claims).items() if value is not None}
    token = jwt.encode({"alg": ACCESS_TOKEN_ALGORITHM}, payload, key)
    return token, claims


def decode_access_token(
    token: str, key: OctKey, settings: AuthSettings, now: int | None = None
) -> AccessClaims:
    """Verify signature, algorithm, expiry, issuer and audience; raises InvalidToken."""
    try:
        decoded = jwt.decode(token, key, algorithms=[ACCESS_TOKEN_ALGORITHM])
        registry = jwt.JWTClaimsRegistry(
            now=now,
            iss={"essential": True, "value": settings.jwt_issuer},
            aud={"essential": True, "value": settings.jwt_audience},
            sub={"essential": True},
            exp={"essential": True},
            iat={"essential": True},
            jti={"essential": True},
        )
        registry.validate(decoded.claims)
    except (JoseError, ValueError, TypeError) as error:
        raise InvalidToken(f"invalid access token: {_describe(error)}") from None
    if decoded.header.get("alg") != ACCESS_TOKEN_ALGORITHM:
        raise InvalidToken("invalid access token: unexpected algorithm")
    return _claims_from(decoded.claims)


def _describe(error: Exception) -> str:
    if isinstance(error, JoseError):
        return error.description or error.error
    return "malformed token"


def _claims_from(raw: dict[str, Any]) -> AccessClaims:
    roles, projects, aud = raw.get("roles", []), raw.get("projects", {}), raw["aud"]
    sid = raw.get("sid")
    if isinstance(aud, list):
        aud = aud[0] if len(aud) == 1 else ""
    valid = (
        isinstance(raw["sub"], str)
        and isinstance(raw["jti"], str)
        and (sid is None or isinstance(sid, str))
        and isinstance(roles, list)
        and all(isinstance(r, str) for r in roles)
        and isinstance(projects, dict)
        and all(isinstance(k, str) and isinstance(v, str) for k, v in projects.items())
    )
    if not valid:
        raise InvalidToken("invalid access token: malformed claims")
    return AccessClaims(
        sub=raw["sub"],
        roles=roles,
        projects=projects,
        iat=int(raw["iat"]),
        exp=int(raw["exp"]),
        jti=raw["jti"],
        iss=raw["iss"],
        aud=aud,
        sid=sid,
    )


def hash_refresh_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


# Atomically use up a refresh token and store its successor in the same family.
# A token that was already used revokes its whole family and its access tokens (reuse
# detection). KEYS: old token, new token. ARGV: now, new expires_at, new ttl, new token hash,
# family key prefix, token key prefix, revoked-family marker prefix, access token ttl.
_ROTATE = """
local rec = redis.call('HMGET', KEYS[1], 'family', 'username', 'used', 'expires_at')
if not rec[1] then return {'missing'} end
local family_key = ARGV[5] .. rec[1]
local tokens_key = family_key .. ':tokens'
if redis.call('HGET', family_key, 'revoked') ~= '0' then return {'revoked'} end
if tonumber(rec[4]) <= tonumber(ARGV[1]) then return {'expired'} end
if rec[3] == '1' then
  for _, h in ipairs(redis.call('SMEMBERS', tokens_key)) do
    redis.call('DEL', ARGV[6] .. h)
  end
  redis.call('HSET', family_key, 'revoked', '1')
  redis.call('SET', ARGV[7] .. rec[1], '1', 'EX', ARGV[8])
  return {'reused', rec[1], rec[2]}
end
redis.call('HSET', KEYS[1], 'used', '1')
redis.call('HSET', KEYS[2], 'family', rec[1], 'username', rec[2], 'used', '0',
           'expires_at', ARGV[2])
redis.call('EXPIRE', KEYS[2], ARGV[3])
redis.call('SADD', tokens_key, ARGV[4])
redis.call('EXPIRE', tokens_key, ARGV[3])
redis.call('EXPIRE', family_key, ARGV[3])
return {'ok', rec[1], rec[2]}
"""

# Revoke a family: all its tokens are deleted and it is marked revoked; with an access token
# ttl, its access tokens are refused too (for as long as any of them can be valid).
# KEYS: family, family tokens, revoked-family marker. ARGV: token key prefix, access ttl (0: no).
_REVOKE_FAMILY = """
for _, h in ipairs(redis.call('SMEMBERS', KEYS[2])) do
  redis.call('DEL', ARGV[1] .. h)
end
if tonumber(ARGV[2]) > 0 then
  redis.call('SET', KEYS[3], '1', 'EX', ARGV[2])
end
if redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('HSET', KEYS[1], 'revoked', '1')
  return 1
end
return 0
"""


@dataclass
class TokenService:
    """Issues, rotates and revokes tokens for the users of a `UserStore`."""

    redis: aioredis.Redis
    settings: AuthSettings
    secret: str
    users: UserStore
    key: OctKey = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.key = access_token_key(self.secret)

    # Access tokens

    async def issue_access_token(
        self, username: str, family: str | None = None
    ) -> tuple[str, AccessClaims]:
        """A fresh access token carrying the user's current instance and project roles, and
        the refresh family (login) it belongs to, if any."""
        user = await self.users.get(username)
        if user is None:
            raise UnknownUser(f"no user {username!r}")
        roles = [InstanceRole.ADMIN.value] if user.is_admin else []
        projects = {p: r.value for p, r in (await self.users.roles_of(username)).items()}
        return encode_access_token(self.key, self.settings, username, roles, projects, sid=family)

    async def verify_access_token(self, token: str) -> AccessClaims:
        """Decode and validate, then refuse tokens revoked by logout, or whose login was
        revoked (logout, refresh token reuse); raises InvalidToken."""
        claims = decode_access_token(token, self.key, self.settings)
        denials = [keys.key_revoked_access_token(claims.jti)]
        if claims.sid is not None:
            denials.append(keys.key_revoked_refresh_family(claims.sid))
        if await self.redis.exists(*denials):
            raise InvalidToken("invalid access token: it was revoked")
        return claims

    async def revoke_access_token(self, jti: str, expires_at: int) -> None:
        """Deny an access token until it expires on its own."""
        if expires_at > int(time.time()):
            await self.redis.set(keys.key_revoked_access_token(jti), "1", exat=expires_at)

    # Token pairs and refresh tokens

    async def issue_token_pair(self, username: str) -> TokenPair:
        """Log in: an access token and the first refresh token of a new family."""
        family = secrets.token_urlsafe(16)
        access_token, _ = await self.issue_access_token(username, family)
        refresh_token = secrets.token_urlsafe(32)
        token_hash = hash_refresh_token(refresh_token)
        ttl = self.settings.refresh_token_ttl_seconds
        now = int(time.time())
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(
                keys.key_refresh_family(family),
                mapping={"username": username, "revoked": "0", "created_at": str(now)},
            )
            pipe.expire(keys.key_refresh_family(family), ttl)
            pipe.hset(
                keys.key_refresh_token(token_hash),
                mapping={
                    "family": family,
                    "username": username,
                    "used": "0",
                    "expires_at": str(now + ttl),
                },
            )
            pipe.expire(keys.key_refresh_token(token_hash), ttl)
            pipe.sadd(keys.key_refresh_family_tokens(family), token_hash)
            pipe.expire(keys.key_refresh_family_tokens(family), ttl)
            pipe.sadd(keys.key_user_refresh_families(username), family)
            await pipe.execute()
        await self._forget_expired_families(username)
        return self._pair(access_token, refresh_token)

    async def rotate(self, refresh_token: str) -> TokenPair:
        """Use up a refresh token for a new pair in the same family; raises InvalidToken.

        Presenting a token that was already used revokes its whole family, and the access
        tokens issued with it.
        """
        new_refresh_token = secrets.token_urlsafe(32)
        new_hash = hash_refresh_token(new_refresh_token)
        ttl = self.settings.refresh_token_ttl_seconds
        now = int(time.time())
        outcome = await self.redis.eval(
            _ROTATE,
            2,
            keys.key_refresh_token(hash_refresh_token(refresh_token)),
            keys.key_refresh_token(new_hash),
            now,
            now + ttl,
            ttl,
            new_hash,
            keys.REFRESH_FAMILY_PREFIX,
            keys.REFRESH_TOKEN_PREFIX,
            keys.REVOKED_FAMILY_PREFIX,
            self.settings.access_token_ttl_seconds,
        )
        status = outcome[0]
        if status == "reused":
            log.warning(
                "refresh token reused: family and its access tokens revoked",
                extra={"username": outcome[2], "family": outcome[1]},
            )
            raise InvalidToken("refresh token was already used; this login has been revoked")
        if status != "ok":
            raise InvalidToken("refresh token is invalid, expired or revoked")
        family, username = outcome[1], outcome[2]
        try:
            access_token, _ = await self.issue_access_token(username, family)
        except UnknownUser:
            await self._revoke_family(family, with_access_tokens=True)
            raise InvalidToken("refresh token is invalid, expired or revoked") from None
        return self._pair(access_token, new_refresh_token)

    async def revoke(self, refresh_token: str) -> bool:
        """Log out: revoke the family of a refresh token and the access tokens issued with it.
        False if it was unknown."""
        family = await self.redis.hget(
            keys.key_refresh_token(hash_refresh_token(refresh_token)), "family"
        )
        if family is None:
            return False
        return await self._revoke_family(family, with_access_tokens=True)

    async def revoke_all(self, username: str) -> int:
        """End every refresh token family of a user (password change, account compromise);
        access tokens already issued run out on their own."""
        families = await self.redis.smembers(keys.key_user_refresh_families(username))
        revoked = 0
        for family in families:
            revoked += await self._revoke_family(family)
        await self.redis.delete(keys.key_user_refresh_families(username))
        return revoked

    async def logout(
        self, refresh_token: str | None, jti: str | None, expires_at: int | None
    ) -> None:
        """Revoke the refresh token's family and the access token in use."""
        if refresh_token:
            await self.revoke(refresh_token)
        if jti and expires_at:
            await self.revoke_access_token(jti, expires_at)

    async def _revoke_family(self, family: str, *, with_access_tokens: bool = False) -> bool:
        revoked = await self.redis.eval(
            _REVOKE_FAMILY,
            3,
            keys.key_refresh_family(family),
            keys.key_refresh_family_tokens(family),
            keys.key_revoked_refresh_family(family),
            keys.REFRESH_TOKEN_PREFIX,
            self.settings.access_token_ttl_seconds if with_access_tokens else 0,
        )
        return bool(revoked)

    async def _forget_expired_families(self, username: str) -> None:
        key = keys.key_user_refresh_families(username)
        families = list(await self.redis.smembers(key))
        if not families:
            return
        async with self.redis.pipeline(transaction=False) as pipe:
            for family in families:
                pipe.exists(keys.key_refresh_family(family))
            alive = await pipe.execute()
        gone = [f for f, exists in zip(families, alive, strict=True) if not exists]
        if gone:
            await self.redis.srem(key, *gone)

    def _pair(self, access_token: str, refresh_token: str) -> TokenPair:
        return TokenPair(
            access_token=access_token,
            refresh_token=refresh_token,
            expires_in=self.settings.access_token_ttl_seconds,
        )
