"""Users, identities, verified emails, the first admin and project memberships."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import redis.asyncio as aioredis
from argon2 import PasswordHasher

from gobuild.platform.auth.permissions import ProjectRole
from gobuild.platform.auth.service import AuthService
from gobuild.platform.auth.users import (
    EmailInUse,
    InvalidUsername,
    LastAdminError,
    LastOwnerError,
    UnknownUser,
    UserError,
    UserExists,
    UserStore,
)
from gobuild.platform.config import AuthSettings
from gobuild.platform.stores.keys import key_user


@pytest.mark.parametrize(
    "username", ["", "Jane", "-jane", ".jane", "jane doe", "jane:x", "a" * 40, "jäne"]
)
async def test_invalid_usernames_are_refused(auth: AuthService, username: str) -> None:
    with pytest.raises(InvalidUsername):
        await auth.users.create(username)


async def test_valid_usernames_are_accepted(auth: AuthService) -> None:
    for username in ("j", "jane.doe", "jane_doe-2", "0day", "a" * 39):
        assert (await auth.users.create(username)).username == username


async def test_usernames_are_unique(auth: AuthService) -> None:
    await auth.users.create("jane")
    with pytest.raises(UserExists):
        await auth.users.create("jane", email="other@example.com")


async def test_password_is_stored_hashed_and_verified(auth: AuthService) -> None:
    user = await auth.users.create("jane", password="correct horse")
    assert user.password_hash and user.password_hash.startswith("$argon2id$")
    assert "correct horse" not in str(user.public())
    assert user.public()["has_password"] is True
    assert await auth.users.verify_password("jane", "correct horse")
    assert await auth.users.verify_password("jane", "wrong") is None
    assert await auth.users.verify_password("nobody", "correct horse") is None


async def test_set_password_replaces_the_old_one(auth: AuthService) -> None:
    await auth.users.create("jane", password="old password")
    await auth.users.set_password("jane", "new password")
    assert await auth.users.verify_password("jane", "old password") is None
    assert await auth.users.verify_password("jane", "new password")


async def test_only_verified_emails_are_found(auth: AuthService) -> None:
    await auth.users.create("jane", email="Jane@Example.com", email_verified=True)
    await auth.users.create("joe", email="joe@example.com", email_verified=False)
    found = await auth.users.find_by_email("jane@example.COM")
    assert found is not None and found.username == "jane"
    assert await auth.users.find_by_email("joe@example.com") is None


async def test_a_verified_email_belongs_to_one_user(auth: AuthService) -> None:
    await auth.users.create("jane", email="jane@example.com", email_verified=True)
    with pytest.raises(EmailInUse):
        await auth.users.create("jane2", email="jane@example.com", email_verified=True)
    # An unverified copy does not claim it.
    await auth.users.create("jane3", email="jane@example.com")
    found = await auth.users.find_by_email("jane@example.com")
    assert found is not None and found.username == "jane"


async def test_bad_email_is_refused(auth: AuthService) -> None:
    with pytest.raises(UserError, match="invalid email"):
        await auth.users.create("jane", email="not-an-email")


async def test_identity_links_to_one_user_only(auth: AuthService) -> None:
    await auth.users.create("jane")
    await auth.users.create("joe")
    assert await auth.users.link_identity("github", "42", "jane")
    assert await auth.users.link_identity("github", "42", "jane")
    assert not await auth.users.link_identity("github", "42", "joe")
    found = await auth.users.find_by_identity("github", "42")
    assert found is not None and found.username == "jane"
    assert await auth.users.find_by_identity("gitlab", "42") is None
    assert await auth.users.identities("jane") == [("github", "42")]
    with pytest.raises(UnknownUser):
        await auth.users.link_identity("gitlab", "7", "nobody")


async def test_list_returns_users_in_creation_order(auth: AuthService) -> None:
    for name in ("b", "a", "c"):
        await auth.users.create(name)
    assert [u.username for u in await auth.users.list()] == ["b", "a", "c"]


async def test_delete_removes_the_user_and_everything_that_was_theirs(
    auth: AuthService, redis: aioredis.Redis
) -> None:
    await auth.users.create("root", is_admin=True)
    await auth.users.create("jane", email="jane@example.com", email_verified=True)
    await auth.users.set_member("p_site", "root", "owner")
    await auth.users.set_member("p_site", "jane", "maintainer")
    await auth.users.link_identity("github", "42", "jane")
    _, plaintext = await auth.api_keys.create("jane", "ci", ["builds:read"])
    await auth.tokens.issue_token_pair("jane")

    assert await auth.users.delete("jane")

    assert await auth.users.get("jane") is None
    assert [u.username for u in await auth.users.list()] == ["root"]
    assert await auth.users.members("p_site") == {"root": ProjectRole.OWNER}
    assert await auth.users.find_by_identity("github", "42") is None
    assert await auth.users.find_by_email("jane@example.com") is None
    assert await auth.api_keys.authenticate(plaintext) is None
    left = sorted(k for k in await redis.keys("gobuild:auth:*") if "jane" in k)
    assert left == []
    assert not await auth.users.delete("jane")


async def test_last_admin_cannot_be_deleted(auth: AuthService) -> None:
    await auth.users.create("root", is_admin=True)
    with pytest.raises(LastAdminError):
        await auth.users.delete("root")
    await auth.users.create("second", is_admin=True)
    assert await auth.users.delete("root")
    assert await auth.users.admin_count() == 1


async def test_initial_admin_is_created_once_with_a_generated_password(
    redis: aioredis.Redis, auth_settings: AuthSettings
) -> None:
    users = UserStore(redis)
    password = await users.ensure_initial_admin(auth_settings)
    assert password and len(password) >= 16
    admin = await users.verify_password("admin", password)
    assert admin is not None and admin.is_admin
    assert await users.ensure_initial_admin(auth_settings) is None


async def test_initial_admin_uses_the_configured_password(
    redis: aioredis.Redis, make_auth_settings: Callable[..., AuthSettings]
) -> None:
    users = UserStore(redis)
    settings = make_auth_settings(initial_admin_password="s3cret-from-env")
    assert await users.ensure_initial_admin(settings) == "s3cret-from-env"
    assert await users.verify_password("admin", "s3cret-from-env")


async def test_no_initial_admin_when_an_admin_already_exists(
    redis: aioredis.Redis, auth_settings: AuthSettings
) -> None:
    users = UserStore(redis)
    await users.create("root", is_admin=True)
    assert await users.ensure_initial_admin(auth_settings) is None
    assert await users.get("admin") is None


async def test_membership_is_visible_from_both_sides(auth: AuthService) -> None:
    await auth.users.create("jane")
    await auth.users.create("joe")
    await auth.users.set_member("p_site", "jane", "owner")
    await auth.users.set_member("p_site", "joe", "viewer")
    await auth.users.set_member("p_blog", "joe", "maintainer")
    assert await auth.users.members("p_site") == {
        "jane": ProjectRole.OWNER,
        "joe": ProjectRole.VIEWER,
    }
    assert await auth.users.roles_of("joe") == {
        "p_site": ProjectRole.VIEWER,
        "p_blog": ProjectRole.MAINTAINER,
    }
    await auth.users.set_member("p_site", "joe", "maintainer")
    assert (await auth.users.roles_of("joe"))["p_site"] == ProjectRole.MAINTAINER
    assert await auth.users.remove_member("p_site", "joe")
    assert await auth.users.roles_of("joe") == {"p_blog": ProjectRole.MAINTAINER}
    assert not await auth.users.remove_member("p_site", "joe")


async def test_membership_needs_a_known_user_and_role(auth: AuthService) -> None:
    await auth.users.create("jane")
    with pytest.raises(UnknownUser):
        await auth.users.set_member("p_site", "nobody", "viewer")
    with pytest.raises(ValueError, match="unknown project role"):
        await auth.users.set_member("p_site", "jane", "god")


async def test_a_project_keeps_at_least_one_owner(auth: AuthService) -> None:
    await auth.users.create("jane")
    await auth.users.create("joe")
    await auth.users.set_member("p_site", "jane", "owner")
    with pytest.raises(LastOwnerError):
        await auth.users.set_member("p_site", "jane", "viewer")
    with pytest.raises(LastOwnerError):
        await auth.users.remove_member("p_site", "jane")
    await auth.users.set_member("p_site", "joe", "owner")
    assert await auth.users.remove_member("p_site", "jane")
    assert await auth.users.members("p_site") == {"joe": ProjectRole.OWNER}


async def test_login_upgrades_a_hash_made_with_weaker_parameters(
    auth: AuthService, redis: aioredis.Redis
) -> None:
    user = await auth.users.create("jane")
    weak = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1).hash("pw")
    await redis.set(
        key_user("jane"), user.model_copy(update={"password_hash": weak}).model_dump_json()
    )
    upgraded = await auth.users.verify_password("jane", "pw")
    assert upgraded is not None and upgraded.password_hash != weak
    assert upgraded.password_hash.startswith("$argon2id$v=19$m=65536")  # type: ignore[union-attr]
    assert await auth.users.verify_password("jane", "pw")
