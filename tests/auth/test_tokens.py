"""Access tokens are rejected unless genuine and current; refresh tokens rotate and revoke."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import Callable

import pytest
import redis.asyncio as aioredis

from gobuild.platform.auth.service import AuthService
from gobuild.platform.auth.signing import derive_key, load_signing_secret
from gobuild.platform.auth.tokens import (
    InvalidToken,
    TokenService,
    access_token_key,
    decode_access_token,
    encode_access_token,
)
from gobuild.platform.auth.users import UserStore
from gobuild.platform.config import AuthSettings
from gobuild.platform.stores import keys as redis_keys
from tests.auth.conftest import JWT_SECRET


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def make_token(settings: AuthSettings, secret: str = JWT_SECRET, now: int | None = None) -> str:
    token, _ = encode_access_token(
        access_token_key(secret), settings, "jane", [], {"p_site": "viewer"}, now=now
    )
    return token


def test_genuine_access_token_decodes_to_its_claims(auth_settings: AuthSettings) -> None:
    claims = decode_access_token(
        make_token(auth_settings), access_token_key(JWT_SECRET), auth_settings
    )
    assert claims.sub == "jane"
    assert claims.projects == {"p_site": "viewer"}
    assert claims.iss == "gobuild"
    assert claims.aud == "gobuild-api"
    assert claims.exp - claims.iat == auth_settings.access_token_ttl_seconds


def test_expired_access_token_is_rejected(auth_settings: AuthSettings) -> None:
    token = make_token(
        auth_settings, now=int(time.time()) - 2 * auth_settings.access_token_ttl_seconds
    )
    with pytest.raises(InvalidToken, match="expired"):
        decode_access_token(token, access_token_key(JWT_SECRET), auth_settings)


def test_tampered_payload_is_rejected(auth_settings: AuthSettings) -> None:
    header, payload, signature = make_token(auth_settings).split(".")
    claims = json.loads(unb64(payload))
    claims["sub"] = "admin"
    claims["roles"] = ["admin"]
    forged = ".".join([header, b64(json.dumps(claims).encode()), signature])
    with pytest.raises(InvalidToken):
        decode_access_token(forged, access_token_key(JWT_SECRET), auth_settings)


def test_token_signed_with_another_key_is_rejected(auth_settings: AuthSettings) -> None:
    token = make_token(auth_settings, secret="another-secret-that-is-long-enough-for-hs256")
    with pytest.raises(InvalidToken):
        decode_access_token(token, access_token_key(JWT_SECRET), auth_settings)


def test_token_signed_with_the_share_link_key_is_rejected(auth_settings: AuthSettings) -> None:
    token, _ = encode_access_token(
        derive_key(JWT_SECRET, "share-link"), auth_settings, "jane", [], {}
    )
    with pytest.raises(InvalidToken):
        decode_access_token(token, access_token_key(JWT_SECRET), auth_settings)


def test_unsigned_alg_none_token_is_rejected(auth_settings: AuthSettings) -> None:
    _, payload, _ = make_token(auth_settings).split(".")
    for alg in ("none", "None", "NONE"):
        header = b64(json.dumps({"alg": alg, "typ": "JWT"}).encode())
        for unsigned in (f"{header}.{payload}.", f"{header}.{payload}"):
            with pytest.raises(InvalidToken):
                decode_access_token(unsigned, access_token_key(JWT_SECRET), auth_settings)


def test_token_for_another_audience_or_issuer_is_rejected(
    make_auth_settings: Callable[..., AuthSettings], auth_settings: AuthSettings
) -> None:
    for other in (
        make_auth_settings(jwt_audience="other-api"),
        make_auth_settings(jwt_issuer="evil"),
    ):
        with pytest.raises(InvalidToken, match=r"aud|iss"):
            decode_access_token(make_token(other), access_token_key(JWT_SECRET), auth_settings)


def test_garbage_is_rejected(auth_settings: AuthSettings) -> None:
    for garbage in ("", "abc", "a.b.c", "x" * 5000):
        with pytest.raises(InvalidToken):
            decode_access_token(garbage, access_token_key(JWT_SECRET), auth_settings)


async def test_login_pair_carries_roles_and_projects(auth: AuthService) -> None:
    await auth.users.create("jane", is_admin=True)
    await auth.users.set_member("p_site", "jane", "maintainer")
    pair = await auth.tokens.issue_token_pair("jane")
    assert pair.token_type == "bearer"
    assert pair.expires_in == 900
    claims = await auth.tokens.verify_access_token(pair.access_token)
    assert claims.sub == "jane"
    assert claims.roles == ["admin"]
    assert claims.projects == {"p_site": "maintainer"}


async def test_refresh_rotates_to_a_new_pair_that_works(auth: AuthService) -> None:
    await auth.users.create("jane")
    first = await auth.tokens.issue_token_pair("jane")
    second = await auth.tokens.rotate(first.refresh_token)
    assert second.refresh_token != first.refresh_token
    assert (await auth.tokens.verify_access_token(second.access_token)).sub == "jane"
    third = await auth.tokens.rotate(second.refresh_token)
    assert (await auth.tokens.verify_access_token(third.access_token)).sub == "jane"


async def test_reusing_a_used_refresh_token_revokes_the_whole_family(auth: AuthService) -> None:
    await auth.users.create("jane")
    stolen = await auth.tokens.issue_token_pair("jane")
    legit = await auth.tokens.rotate(stolen.refresh_token)
    other_login = await auth.tokens.issue_token_pair("jane")

    with pytest.raises(InvalidToken, match="already used"):
        await auth.tokens.rotate(stolen.refresh_token)
    # The newest token of that family is dead too; a separate login is untouched.
    with pytest.raises(InvalidToken):
        await auth.tokens.rotate(legit.refresh_token)
    with pytest.raises(InvalidToken):
        await auth.tokens.rotate(stolen.refresh_token)
    assert await auth.tokens.rotate(other_login.refresh_token)


async def test_reusing_a_refresh_token_revokes_the_access_tokens_of_that_login_too(
    auth: AuthService,
) -> None:
    await auth.users.create("jane")
    stolen = await auth.tokens.issue_token_pair("jane")
    legit = await auth.tokens.rotate(stolen.refresh_token)
    other_login = await auth.tokens.issue_token_pair("jane")
    family = (await auth.tokens.verify_access_token(legit.access_token)).sid
    assert family is not None
    assert (await auth.tokens.verify_access_token(stolen.access_token)).sid == family

    with pytest.raises(InvalidToken, match="already used"):
        await auth.tokens.rotate(stolen.refresh_token)

    for pair in (stolen, legit):
        with pytest.raises(InvalidToken, match="revoked"):
            await auth.tokens.verify_access_token(pair.access_token)
    assert (await auth.tokens.verify_access_token(other_login.access_token)).sub == "jane"
    # The marker lasts as long as an access token of that login can still be valid.
    ttl = await auth.tokens.redis.ttl(redis_keys.key_revoked_refresh_family(family))
    assert 0 < ttl <= auth.tokens.settings.access_token_ttl_seconds


async def test_concurrent_use_of_one_refresh_token_counts_as_reuse(auth: AuthService) -> None:
    await auth.users.create("jane")
    pair = await auth.tokens.issue_token_pair("jane")
    results = await asyncio.gather(
        *(auth.tokens.rotate(pair.refresh_token) for _ in range(5)), return_exceptions=True
    )
    winners = [r for r in results if not isinstance(r, Exception)]
    assert len(winners) == 1
    assert all(isinstance(r, InvalidToken) for r in results if r not in winners)
    with pytest.raises(InvalidToken):
        await auth.tokens.rotate(winners[0].refresh_token)


async def test_logout_revokes_refresh_family_and_current_access_token(auth: AuthService) -> None:
    await auth.users.create("jane")
    pair = await auth.tokens.issue_token_pair("jane")
    other_login = await auth.tokens.issue_token_pair("jane")
    claims = await auth.tokens.verify_access_token(pair.access_token)

    await auth.tokens.logout(pair.refresh_token, claims.jti, claims.exp)

    with pytest.raises(InvalidToken):
        await auth.tokens.rotate(pair.refresh_token)
    with pytest.raises(InvalidToken, match="revoked"):
        await auth.tokens.verify_access_token(pair.access_token)
    assert await auth.tokens.verify_access_token(other_login.access_token)
    assert await auth.tokens.rotate(other_login.refresh_token)
    # The denylist entry goes away when the token would have expired anyway.
    ttl = await auth.tokens.redis.ttl(redis_keys.key_revoked_access_token(claims.jti))
    assert 0 < ttl <= 900


async def test_revoke_all_ends_every_session_of_a_user(auth: AuthService) -> None:
    await auth.users.create("jane")
    pairs = [await auth.tokens.issue_token_pair("jane") for _ in range(3)]
    assert await auth.tokens.revoke_all("jane") == 3
    for pair in pairs:
        with pytest.raises(InvalidToken):
            await auth.tokens.rotate(pair.refresh_token)


async def test_refresh_of_a_deleted_user_is_rejected(auth: AuthService) -> None:
    await auth.users.create("jane")
    await auth.users.create("root", is_admin=True)
    pair = await auth.tokens.issue_token_pair("jane")
    await auth.users.delete("jane")
    with pytest.raises(InvalidToken):
        await auth.tokens.rotate(pair.refresh_token)


async def test_unknown_refresh_token_is_rejected(auth: AuthService) -> None:
    with pytest.raises(InvalidToken):
        await auth.tokens.rotate("not-a-token")
    assert not await auth.tokens.revoke("not-a-token")


async def test_generated_secret_is_shared_by_every_gateway_process(
    redis: aioredis.Redis, make_auth_settings: Callable[..., AuthSettings]
) -> None:
    settings = make_auth_settings(jwt_secret="")
    secrets = await asyncio.gather(*(load_signing_secret(redis, settings) for _ in range(5)))
    assert len(set(secrets)) == 1
    assert len(secrets[0]) >= 32
    assert await redis.get(redis_keys.KEY_JWT_SECRET) == secrets[0]

    users = UserStore(redis)
    await users.create("jane")
    process_a = TokenService(redis, settings, await load_signing_secret(redis, settings), users)
    process_b = TokenService(redis, settings, await load_signing_secret(redis, settings), users)
    token, _ = await process_a.issue_access_token("jane")
    assert (await process_b.verify_access_token(token)).sub == "jane"


def test_short_configured_secret_is_refused(
    make_auth_settings: Callable[..., AuthSettings],
) -> None:
    with pytest.raises(ValueError, match="at least 32"):
        make_auth_settings(jwt_secret="short")
