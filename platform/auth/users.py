"""Users, their linked OAuth identities and their roles in projects, kept in Redis."""

from __future__ import annotations

import logging
import re
import secrets
from collections.abc import Callable
from datetime import datetime

import redis.asyncio as aioredis
from pydantic import BaseModel, Field
from redis.asyncio.client import Pipeline

from gobuild.platform.auth.passwords import hash_password, needs_rehash, verify_password
from gobuild.platform.auth.permissions import ProjectRole, parse_role
from gobuild.platform.config import AuthSettings
from gobuild.platform.events import utcnow
from gobuild.platform.stores import keys
from gobuild.platform.stores.optimistic import optimistic_update

log = logging.getLogger(__name__)

USERNAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,38}$")
EMAIL_PATTERN = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
MAX_EMAIL_LENGTH = 254
MAX_PASSWORD_LENGTH = 1024
INITIAL_ADMIN_USERNAME = "admin"
# Verifying against this hash when a user does not exist makes "no such user" take as long as
# "wrong password", so response times do not reveal which usernames exist.
_UNKNOWN_USER_HASH = (
    "$argon2id$v=19$m=65536,t=3,p=4$SXcYtNLkrcIOEf+uDqDhsg"
    "$hJ0kDWj0QVChAESzZoY6YsAFpzyqv7IDTc/AgtJj/d4"
)


class UserError(ValueError):
    """A request about users that cannot be done; the message is safe to show the client."""


class InvalidUsername(UserError):
    pass


class UserExists(UserError):
    pass


class EmailInUse(UserError):
    pass


class UnknownUser(UserError):
    pass


class LastAdminError(UserError):
    pass


class LastOwnerError(UserError):
    pass


class User(BaseModel):
    username: str
    email: str | None = None
    email_verified: bool = False
    name: str | None = None
    is_admin: bool = False
    # None for users who only sign in with GitHub / GitLab.
    password_hash: str | None = None
    created_at: datetime = Field(default_factory=utcnow)

    def public(self) -> dict[str, object]:
        """The user as the API shows it: never the password hash."""
        data = self.model_dump(mode="json", exclude={"password_hash"})
        data["has_password"] = self.password_hash is not None
        return data


def validate_username(username: str) -> str:
    if not USERNAME_PATTERN.fullmatch(username):
        raise InvalidUsername(
            f"invalid username {username!r}: 1-39 characters, lowercase letters, digits, "
            "'_', '.', '-', starting with a letter or digit"
        )
    return username


def normalize_email(email: str) -> str:
    email = email.strip().lower()
    if len(email) > MAX_EMAIL_LENGTH or not EMAIL_PATTERN.fullmatch(email):
        raise UserError(f"invalid email address {email!r}")
    return email


def _validate_password(password: str) -> str:
    if not password:
        raise UserError("the password must not be empty")
    if len(password) > MAX_PASSWORD_LENGTH:
        raise UserError(f"the password must be at most {MAX_PASSWORD_LENGTH} characters")
    return password


class UserStore:
    """Users by username, verified email and linked identity; project memberships."""

    def __init__(self, redis: aioredis.Redis) -> None:
        self.redis = redis

    # Users

    async def create(
        self,
        username: str,
        *,
        password: str | None = None,
        email: str | None = None,
        email_verified: bool = False,
        name: str | None = None,
        is_admin: bool = False,
    ) -> User:
        """Create a user; raises InvalidUsername, UserExists, EmailInUse (verified email of
        another user) or UserError (bad email or password)."""
        validate_username(username)
        email = normalize_email(email) if email else None
        if email and email_verified and await self.find_by_email(email):
            raise EmailInUse(f"the email address {email} belongs to another user")
        password_hash = await hash_password(_validate_password(password)) if password else None
        user = User(
            username=username,
            email=email,
            email_verified=bool(email and email_verified),
            name=name,
            is_admin=is_admin,
            password_hash=password_hash,
        )
        if not await self.redis.set(keys.key_user(username), user.model_dump_json(), nx=True):
            raise UserExists(f"the username {username!r} is taken")
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.zadd(keys.KEY_USERS, {username: user.created_at.timestamp()})
            if is_admin:
                pipe.sadd(keys.KEY_ADMINS, username)
            if user.email and user.email_verified:
                pipe.set(keys.key_user_by_email(user.email), username, nx=True)
            await pipe.execute()
        log.info("user created", extra={"username": username, "is_admin": is_admin})
        return user

    async def get(self, username: str) -> User | None:
        if not USERNAME_PATTERN.fullmatch(username):
            return None
        raw = await self.redis.get(keys.key_user(username))
        return User.model_validate_json(raw) if raw else None

    async def list(self) -> list[User]:
        usernames = await self.redis.zrange(keys.KEY_USERS, 0, -1)
        if not usernames:
            return []
        raws = await self.redis.mget([keys.key_user(u) for u in usernames])
        return [User.model_validate_json(r) for r in raws if r]

    async def admin_count(self) -> int:
        return int(await self.redis.scard(keys.KEY_ADMINS))

    async def delete(self, username: str) -> bool:
        """Delete a user with their identities, memberships, API keys and refresh tokens.

        Raises LastAdminError rather than remove the last admin user.
        """
        user = await self.get(username)
        if user is None:
            return False
        if user.is_admin and await self.admin_count() <= 1:
            raise LastAdminError("cannot delete the last admin user")
        identities = await self.redis.smembers(keys.key_user_identities(username))
        projects = await self.redis.hkeys(keys.key_user_projects(username))
        api_key_ids = await self.redis.smembers(keys.key_user_api_keys(username))
        families = await self.redis.smembers(keys.key_user_refresh_families(username))
        family_tokens = [
            (family, await self.redis.smembers(keys.key_refresh_family_tokens(family)))
            for family in families
        ]
        email_owner = (
            await self.redis.get(keys.key_user_by_email(user.email)) if user.email else None
        )
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.delete(keys.key_user(username))
            pipe.zrem(keys.KEY_USERS, username)
            pipe.srem(keys.KEY_ADMINS, username)
            if user.email and email_owner == username:
                pipe.delete(keys.key_user_by_email(user.email))
            for identity in identities:
                provider, _, provider_user_id = identity.partition(":")
                pipe.delete(keys.key_identity(provider, provider_user_id))
            pipe.delete(keys.key_user_identities(username))
            for project_id in projects:
                pipe.hdel(keys.key_project_members(project_id), username)
            pipe.delete(keys.key_user_projects(username))
            for key_id in api_key_ids:
                pipe.delete(keys.key_api_key(key_id))
            pipe.delete(keys.key_user_api_keys(username))
            for family, token_hashes in family_tokens:
                for token_hash in token_hashes:
                    pipe.delete(keys.key_refresh_token(token_hash))
                pipe.delete(keys.key_refresh_family_tokens(family))
                pipe.delete(keys.key_refresh_family(family))
            pipe.delete(keys.key_user_refresh_families(username))
            await pipe.execute()
        log.info("user deleted", extra={"username": username})
        return True

    async def set_password(self, username: str, password: str) -> User:
        """Set (or replace) a user's password. Sessions are not touched: revoke them apart."""
        password_hash = await hash_password(_validate_password(password))
        return await self._modify(
            username, lambda user: user.model_copy(update={"password_hash": password_hash})
        )

    async def verify_password(self, username: str, password: str) -> User | None:
        """The user if `password` is theirs, else None (also for unknown users)."""
        user = await self.get(username)
        if user is None or user.password_hash is None:
            await verify_password(_UNKNOWN_USER_HASH, password)
            return None
        if not await verify_password(user.password_hash, password):
            return None
        if needs_rehash(user.password_hash):
            user = await self.set_password(username, password)
        return user

    async def ensure_initial_admin(self, settings: AuthSettings) -> str | None:
        """Create the user `admin` when there is no admin user yet.

        Returns the password set (GOBUILD_INITIAL_ADMIN_PASSWORD, or a generated one the caller
        prints once); None when an admin user already exists (or another process made one).
        """
        if await self.admin_count():
            return None
        password = settings.initial_admin_password or secrets.token_urlsafe(18)
        try:
            await self.create(INITIAL_ADMIN_USERNAME, password=password, is_admin=True)
        except UserExists:
            existing = await self.get(INITIAL_ADMIN_USERNAME)
            if existing is not None and not existing.is_admin:
                log.warning(
                    "no admin user: the user 'admin' exists without the admin role; "
                    "use the admin API key to grant it"
                )
            return None
        return password

    async def _modify(self, username: str, change: Callable[[User], User]) -> User:
        key = keys.key_user(username)

        async def transaction(pipe: Pipeline) -> User:
            raw = await pipe.get(key)
            if raw is None:
                raise UnknownUser(f"no user {username!r}")
            updated = change(User.model_validate_json(raw))
            pipe.multi()
            pipe.set(key, updated.model_dump_json())
            return updated

        return await optimistic_update(self.redis, [key], transaction, what=f"user {username}")

    # Linked identities (GitHub / GitLab accounts) and verified emails

    async def link_identity(self, provider: str, provider_user_id: str, username: str) -> bool:
        """Link an OAuth identity to a user; False if it is already linked to someone else."""
        if await self.get(username) is None:
            raise UnknownUser(f"no user {username!r}")
        key = keys.key_identity(provider, provider_user_id)
        if not await self.redis.set(key, username, nx=True):
            return await self.redis.get(key) == username
        await self.redis.sadd(keys.key_user_identities(username), f"{provider}:{provider_user_id}")
        return True

    async def find_by_identity(self, provider: str, provider_user_id: str) -> User | None:
        username = await self.redis.get(keys.key_identity(provider, provider_user_id))
        return await self.get(username) if username else None

    async def identities(self, username: str) -> list[tuple[str, str]]:
        """`(provider, provider_user_id)` pairs linked to a user."""
        members = await self.redis.smembers(keys.key_user_identities(username))
        return sorted(tuple(m.split(":", 1)) for m in members)  # type: ignore[misc]

    async def find_by_email(self, email: str) -> User | None:
        """The user whose *verified* email this is; unverified emails never match."""
        try:
            email = normalize_email(email)
        except UserError:
            return None
        username = await self.redis.get(keys.key_user_by_email(email))
        user = await self.get(username) if username else None
        if user is None or user.email != email or not user.email_verified:
            return None
        return user

    # Project membership

    async def set_member(self, project_id: str, username: str, role: str) -> ProjectRole:
        """Give `username` a role in a project (add or change). Raises UnknownUser,
        ValueError (unknown role) or LastOwnerError (would leave the project without owner)."""
        project_role = parse_role(role)
        if await self.get(username) is None:
            raise UnknownUser(f"no user {username!r}")

        def check(members: dict[str, str]) -> None:
            if project_role != ProjectRole.OWNER:
                _check_owner_remains(members, username)

        def write(pipe: Pipeline) -> None:
            pipe.hset(keys.key_project_members(project_id), username, project_role.value)
            pipe.hset(keys.key_user_projects(username), project_id, project_role.value)

        await self._change_members(project_id, check, write)
        return project_role

    async def remove_member(self, project_id: str, username: str) -> bool:
        """Take `username` out of a project; raises LastOwnerError for its last owner."""
        removed = False

        def check(members: dict[str, str]) -> None:
            nonlocal removed
            removed = username in members
            _check_owner_remains(members, username)

        def write(pipe: Pipeline) -> None:
            pipe.hdel(keys.key_project_members(project_id), username)
            pipe.hdel(keys.key_user_projects(username), project_id)

        await self._change_members(project_id, check, write)
        return removed

    async def members(self, project_id: str) -> dict[str, ProjectRole]:
        raw = await self.redis.hgetall(keys.key_project_members(project_id))
        return {username: ProjectRole(role) for username, role in sorted(raw.items())}

    async def roles_of(self, username: str) -> dict[str, ProjectRole]:
        """Project id -> role for every project the user is a member of."""
        raw = await self.redis.hgetall(keys.key_user_projects(username))
        return {project_id: ProjectRole(role) for project_id, role in raw.items()}

    async def _change_members(
        self,
        project_id: str,
        check: Callable[[dict[str, str]], None],
        write: Callable[[Pipeline], None],
    ) -> None:
        key = keys.key_project_members(project_id)

        async def transaction(pipe: Pipeline) -> None:
            check(await pipe.hgetall(key))
            pipe.multi()
            write(pipe)

        await optimistic_update(
            self.redis, [key], transaction, what=f"members of project {project_id}"
        )


def _check_owner_remains(members: dict[str, str], leaving: str) -> None:
    """Raise if `leaving` is the project's only owner."""
    owners = {u for u, role in members.items() if role == ProjectRole.OWNER.value}
    if owners == {leaving}:
        raise LastOwnerError("a project needs at least one owner; add another owner first")
