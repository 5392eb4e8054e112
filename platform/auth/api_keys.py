"""Personal API keys: `gb_<id>_<secret>`, shown once, stored as the SHA-256 of the secret.

A key acts for its owner, narrowed to its scopes (see `permissions.is_allowed`).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import secrets
from collections.abc import Iterable
from datetime import datetime

import redis.asyncio as aioredis
from pydantic import BaseModel, Field

from gobuild.platform.auth.permissions import Scope, parse_scopes
from gobuild.platform.auth.users import UnknownUser, UserError, UserStore
from gobuild.platform.events import utcnow
from gobuild.platform.records import new_id
from gobuild.platform.stores import keys

log = logging.getLogger(__name__)

KEY_PREFIX = "gb_"
MAX_NAME_LENGTH = 100
MAX_KEYS_PER_USER = 100
# gb_<12 lowercase letters/digits>_<43 url-safe base64 characters>
_PLAINTEXT_PATTERN = re.compile(r"^gb_([a-z0-9]{12})_([A-Za-z0-9_-]{43})$")

# Record the last use only of a key that still exists (a revoke may have just deleted it).
_TOUCH = """
if redis.call('HEXISTS', KEYS[1], 'record') == 1 then
  redis.call('HSET', KEYS[1], 'last_used_at', ARGV[1])
end
"""


class ApiKey(BaseModel):
    id: str
    username: str
    name: str = Field(min_length=1, max_length=MAX_NAME_LENGTH)
    scopes: list[Scope]
    secret_sha256: str
    created_at: datetime = Field(default_factory=utcnow)
    expires_at: datetime | None = None
    last_used_at: datetime | None = None

    @property
    def prefix(self) -> str:
        """The non-secret part of the key, to recognise it in lists (`gb_<id>`)."""
        return f"{KEY_PREFIX}{self.id}"

    def is_expired(self, now: datetime | None = None) -> bool:
        return self.expires_at is not None and self.expires_at <= (now or utcnow())

    def public(self) -> dict[str, object]:
        """The key as the API lists it: never the secret nor its hash."""
        data = self.model_dump(mode="json", exclude={"secret_sha256"})
        data["prefix"] = self.prefix
        return data


def _hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def looks_like_api_key(value: str) -> bool:
    return value.startswith(KEY_PREFIX)


class ApiKeyStore:
    """Create, authenticate, list and revoke API keys."""

    def __init__(self, redis: aioredis.Redis, users: UserStore) -> None:
        self.redis = redis
        self.users = users

    async def create(
        self,
        username: str,
        name: str,
        scopes: Iterable[str],
        expires_at: datetime | None = None,
    ) -> tuple[ApiKey, str]:
        """A new key and its plaintext, which is never stored and cannot be shown again.

        Raises UnknownUser, or UserError for an unknown scope, a bad name or a past expiry.
        """
        try:
            parsed_scopes = parse_scopes(scopes)
        except ValueError as error:
            raise UserError(str(error)) from None
        name = name.strip()
        if not name or len(name) > MAX_NAME_LENGTH:
            raise UserError(f"the key name must be 1-{MAX_NAME_LENGTH} characters")
        if expires_at is not None:
            if expires_at.tzinfo is None:
                raise UserError("expires_at needs a time zone")
            if expires_at <= utcnow():
                raise UserError("expires_at is in the past")
        if await self.users.get(username) is None:
            raise UnknownUser(f"no user {username!r}")
        if await self.redis.scard(keys.key_user_api_keys(username)) >= MAX_KEYS_PER_USER:
            raise UserError(f"a user can have at most {MAX_KEYS_PER_USER} API keys")
        key_id = new_id("", 12)
        secret = secrets.token_urlsafe(32)
        record = ApiKey(
            id=key_id,
            username=username,
            name=name,
            scopes=sorted(parsed_scopes),
            secret_sha256=_hash_secret(secret),
            expires_at=expires_at,
        )
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(keys.key_api_key(key_id), "record", record.model_dump_json())
            pipe.sadd(keys.key_user_api_keys(username), key_id)
            await pipe.execute()
        log.info("api key created", extra={"username": username, "key_id": key_id})
        return record, f"{KEY_PREFIX}{key_id}_{secret}"

    async def get(self, key_id: str) -> ApiKey | None:
        raw = await self.redis.hgetall(keys.key_api_key(key_id))
        if "record" not in raw:
            return None
        record = ApiKey.model_validate_json(raw["record"])
        if raw.get("last_used_at"):
            record.last_used_at = datetime.fromisoformat(raw["last_used_at"])
        return record

    async def authenticate(self, plaintext: str) -> ApiKey | None:
        """The key's record if `plaintext` is a valid, unexpired, unrevoked key; else None."""
        match = _PLAINTEXT_PATTERN.fullmatch(plaintext)
        if match is None:
            return None
        key_id, secret = match.groups()
        record = await self.get(key_id)
        if record is None:
            return None
        if not hmac.compare_digest(record.secret_sha256, _hash_secret(secret)):
            return None
        now = utcnow()
        if record.is_expired(now):
            return None
        await self.redis.eval(_TOUCH, 1, keys.key_api_key(key_id), now.isoformat())
        record.last_used_at = now
        return record

    async def list(self, username: str) -> list[ApiKey]:
        """A user's keys, newest first, with when each was last used."""
        key_ids = await self.redis.smembers(keys.key_user_api_keys(username))
        records = [r for r in [await self.get(k) for k in key_ids] if r is not None]
        return sorted(records, key=lambda r: r.created_at, reverse=True)

    async def revoke(self, key_id: str, username: str) -> bool:
        """Delete a user's key; it stops working at once. False if they have no such key."""
        record = await self.get(key_id)
        if record is None or record.username != username:
            return False
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.delete(keys.key_api_key(key_id))
            pipe.srem(keys.key_user_api_keys(username), key_id)
            await pipe.execute()
        log.info("api key revoked", extra={"username": username, "key_id": key_id})
        return True
