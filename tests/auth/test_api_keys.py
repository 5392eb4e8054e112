"""Personal API keys: shown once, stored hashed, scoped, expiring and revocable at once."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
import redis.asyncio as aioredis

from gobuild.platform.auth.authentication import AuthenticationError
from gobuild.platform.auth.permissions import Action, Scope, is_allowed
from gobuild.platform.auth.service import AuthService
from gobuild.platform.auth.users import UnknownUser, UserError
from gobuild.platform.events import utcnow
from gobuild.platform.stores import keys as redis_keys


@pytest.fixture
async def jane(auth: AuthService) -> str:
    await auth.users.create("jane")
    await auth.users.set_member("p_site", "jane", "maintainer")
    return "jane"


async def test_key_is_shown_once_and_only_its_hash_is_stored(
    auth: AuthService, redis: aioredis.Redis, jane: str
) -> None:
    record, plaintext = await auth.api_keys.create(jane, "ci deploys", ["builds:write"])
    assert plaintext.startswith(f"gb_{record.id}_")
    secret = plaintext.split("_", 2)[2]
    stored = await redis.hgetall(redis_keys.key_api_key(record.id))
    assert secret not in str(stored)
    listed = [k.public() for k in await auth.api_keys.list(jane)]
    assert listed[0]["prefix"] == f"gb_{record.id}"
    assert secret not in str(listed)
    assert "secret_sha256" not in listed[0]


async def test_authenticate_returns_the_key_and_records_its_last_use(
    auth: AuthService, jane: str
) -> None:
    record, plaintext = await auth.api_keys.create(jane, "ci", ["builds:read"])
    assert (await auth.api_keys.list(jane))[0].last_used_at is None
    found = await auth.api_keys.authenticate(plaintext)
    assert found is not None and found.id == record.id and found.username == jane
    listed = await auth.api_keys.list(jane)
    assert listed[0].last_used_at is not None
    assert utcnow() - listed[0].last_used_at < timedelta(seconds=5)


async def test_wrong_secret_or_malformed_key_is_refused(auth: AuthService, jane: str) -> None:
    record, plaintext = await auth.api_keys.create(jane, "ci", ["builds:read"])
    wrong = plaintext[:-1] + ("A" if plaintext[-1] != "A" else "B")
    for candidate in (wrong, "gb_" + record.id, "gb_nope_x", "", plaintext + "x"):
        assert await auth.api_keys.authenticate(candidate) is None


async def test_key_acts_for_its_owner_within_its_scopes(auth: AuthService, jane: str) -> None:
    _, plaintext = await auth.api_keys.create(jane, "read only", ["builds:read"])
    principal = await auth.authenticator.authenticate(f"Bearer {plaintext}")
    assert principal is not None and principal.kind == "api_key"
    assert principal.scopes == {Scope.BUILDS_READ}
    assert is_allowed(principal, Action.BUILD_READ, "p_site")
    # Jane may build as a maintainer, but this key may not.
    assert not is_allowed(principal, Action.BUILD_CREATE, "p_site")

    _, writer = await auth.api_keys.create(jane, "writer", ["builds:write"])
    principal = await auth.authenticator.authenticate(f"Bearer {writer}")
    assert principal is not None and is_allowed(principal, Action.BUILD_CREATE, "p_site")


async def test_revoked_key_fails_at_once(auth: AuthService, jane: str) -> None:
    record, plaintext = await auth.api_keys.create(jane, "ci", ["builds:read"])
    assert await auth.authenticator.authenticate(f"Bearer {plaintext}")
    assert await auth.api_keys.revoke(record.id, jane)
    assert await auth.api_keys.authenticate(plaintext) is None
    with pytest.raises(AuthenticationError, match="API key"):
        await auth.authenticator.authenticate(f"Bearer {plaintext}")
    assert await auth.api_keys.list(jane) == []
    assert not await auth.api_keys.revoke(record.id, jane)


async def test_only_the_owner_can_revoke_a_key(auth: AuthService, jane: str) -> None:
    await auth.users.create("mallory")
    record, plaintext = await auth.api_keys.create(jane, "ci", ["builds:read"])
    assert not await auth.api_keys.revoke(record.id, "mallory")
    assert await auth.api_keys.authenticate(plaintext) is not None


async def test_expired_key_fails(auth: AuthService, jane: str) -> None:
    _, plaintext = await auth.api_keys.create(
        jane, "short", ["builds:read"], expires_at=utcnow() + timedelta(seconds=1)
    )
    assert await auth.api_keys.authenticate(plaintext) is not None
    await asyncio.sleep(1.1)
    assert await auth.api_keys.authenticate(plaintext) is None


async def test_invalid_key_requests_are_refused(auth: AuthService, jane: str) -> None:
    with pytest.raises(UserError, match="unknown scope"):
        await auth.api_keys.create(jane, "ci", ["builds:read", "root"])
    with pytest.raises(UserError, match="at least one scope"):
        await auth.api_keys.create(jane, "ci", [])
    with pytest.raises(UserError, match="name"):
        await auth.api_keys.create(jane, "  ", ["builds:read"])
    with pytest.raises(UserError, match="past"):
        await auth.api_keys.create(jane, "ci", ["builds:read"], utcnow() - timedelta(seconds=1))
    with pytest.raises(UnknownUser):
        await auth.api_keys.create("nobody", "ci", ["builds:read"])
    assert await auth.api_keys.list(jane) == []


async def test_keys_are_listed_newest_first(auth: AuthService, jane: str) -> None:
    for name in ("first", "second", "third"):
        await auth.api_keys.create(jane, name, ["builds:read"])
    assert [k.name for k in await auth.api_keys.list(jane)] == ["third", "second", "first"]
    assert await auth.api_keys.list("someone-else") == []
