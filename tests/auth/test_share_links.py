"""Share links grant read-only access to one build until they expire or are revoked."""

from __future__ import annotations

import asyncio
import base64
import json

import pytest

from gobuild.platform.auth.service import AuthService
from gobuild.platform.auth.share_links import ShareLinkStore
from gobuild.platform.auth.users import UserError


async def test_share_link_token_verifies_to_its_build(auth: AuthService) -> None:
    link, token = await auth.share_links.create("b_123", created_by="jane")
    assert await auth.share_links.verify(token) == "b_123"
    assert link.build_id == "b_123" and link.created_by == "jane"
    lifetime = (link.expires_at - link.created_at).total_seconds()
    assert lifetime == auth.settings.share_link_ttl_seconds
    assert [found.id for found in await auth.share_links.list_for_build("b_123")] == [link.id]


async def test_revoked_share_link_stops_working_at_once(auth: AuthService) -> None:
    link, token = await auth.share_links.create("b_123", created_by="jane", ttl=3600)
    _, other_token = await auth.share_links.create("b_123", created_by="jane", ttl=3600)
    assert await auth.share_links.revoke(link.id)
    assert await auth.share_links.verify(token) is None
    assert await auth.share_links.verify(other_token) == "b_123"
    assert len(await auth.share_links.list_for_build("b_123")) == 1
    assert not await auth.share_links.revoke(link.id)


async def test_expired_share_link_is_refused(auth: AuthService) -> None:
    _, token = await auth.share_links.create("b_123", created_by="jane", ttl=1)
    assert await auth.share_links.verify(token) == "b_123"
    await asyncio.sleep(1.1)
    assert await auth.share_links.verify(token) is None
    assert await auth.share_links.list_for_build("b_123") == []


async def test_forged_or_foreign_tokens_are_refused(auth: AuthService) -> None:
    _, token = await auth.share_links.create("b_123", created_by="jane")
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["bid"] = "b_secret"
    forged_payload = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    assert await auth.share_links.verify(f"{header}.{forged_payload}.{signature}") is None

    other_instance = ShareLinkStore(
        auth.share_links.redis, auth.settings, "another-secret-that-is-long-enough-for-hs256"
    )
    assert await other_instance.verify(token) is None

    await auth.users.create("jane")
    pair = await auth.tokens.issue_token_pair("jane")
    assert await auth.share_links.verify(pair.access_token) is None
    assert await auth.share_links.verify("garbage") is None


async def test_share_link_lifetime_is_bounded(auth: AuthService) -> None:
    with pytest.raises(UserError, match="lasts"):
        await auth.share_links.create("b_123", created_by="jane", ttl=0)
    with pytest.raises(UserError, match="lasts"):
        await auth.share_links.create(
            "b_123", created_by="jane", ttl=auth.settings.share_link_max_ttl_seconds + 1
        )


async def test_check_tells_revoked_expired_and_invalid_tokens_apart(auth: AuthService) -> None:
    link, token = await auth.share_links.create("b_123", created_by="jane", ttl=3600)
    checked = await auth.share_links.check(token)
    assert checked.status == "valid" and checked.link == link

    await auth.share_links.revoke(link.id)
    assert (await auth.share_links.check(token)).status == "revoked"

    _, short = await auth.share_links.create("b_123", created_by="jane", ttl=1)
    await asyncio.sleep(1.1)
    assert (await auth.share_links.check(short)).status == "expired"

    header, payload, signature = token.split(".")
    assert (await auth.share_links.check(f"{header}.{payload}x.{signature}")).status == "invalid"
    assert (await auth.share_links.check("garbage")).status == "invalid"


async def test_links_are_listed_by_project_and_their_token_can_be_shown_again(
    auth: AuthService,
) -> None:
    link, token = await auth.share_links.create("b_1", "jane", 3600, project_id="p_1")
    other, _ = await auth.share_links.create("b_2", "jane", 3600, project_id="p_2")
    revoked, _ = await auth.share_links.create("b_1", "jane", 3600, project_id="p_1")
    await auth.share_links.revoke(revoked.id)
    assert [found.id for found in await auth.share_links.list_for_projects(["p_1"])] == [link.id]
    both = await auth.share_links.list_for_projects(["p_1", "p_2"])
    assert {found.id for found in both} == {link.id, other.id}
    assert await auth.share_links.verify(auth.share_links.token_for(link)) == "b_1"
    assert auth.share_links.token_for(link) == token
