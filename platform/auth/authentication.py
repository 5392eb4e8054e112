"""Who is calling: resolve an `Authorization` header to a `Principal`, and password logins.

Accepted credentials, in this order:
- `Bearer <admin API key>` or Basic with it as the password: the instance admin key;
- `Bearer gb_...` or Basic with it as the password: a personal API key (narrowed by scopes);
- `Bearer <access token>`: a user session (JWT, not revoked by logout);
- `Basic user:password`: only when GOBUILD_ALLOW_PASSWORD_BASIC is on, with login lockout.
A user's roles are read from Redis on every request, so a changed membership applies at once.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import logging
from dataclasses import dataclass

from gobuild.platform.auth.api_keys import ApiKey, ApiKeyStore, looks_like_api_key
from gobuild.platform.auth.permissions import Principal, admin_key_principal
from gobuild.platform.auth.ratelimit import LoginGuard
from gobuild.platform.auth.tokens import InvalidToken, TokenPair, TokenService
from gobuild.platform.auth.users import User, UserStore
from gobuild.platform.config import AuthSettings

log = logging.getLogger(__name__)


class AuthenticationError(Exception):
    """Credentials were presented and are not valid (HTTP 401); the message is client-safe."""


class LoginLocked(AuthenticationError):
    """Too many failed logins: the account is locked for `retry_after` seconds (HTTP 429)."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"too many failed logins; try again in {retry_after} seconds")
        self.retry_after = retry_after


_BAD_PASSWORD = "invalid username or password"


@dataclass
class Authenticator:
    settings: AuthSettings
    users: UserStore
    tokens: TokenService
    api_keys: ApiKeyStore
    login_guard: LoginGuard
    # Settings.admin_api_key; empty disables the admin key.
    admin_api_key: str = ""

    async def authenticate(self, authorization: str | None) -> Principal | None:
        """The principal of an `Authorization` header; None when there is none.

        Raises AuthenticationError (or LoginLocked) for credentials that are not valid.
        """
        if not authorization:
            return None
        scheme, _, credentials = authorization.strip().partition(" ")
        credentials = credentials.strip()
        if not credentials:
            raise AuthenticationError("malformed Authorization header")
        if scheme.lower() == "bearer":
            return await self._bearer(credentials)
        if scheme.lower() == "basic":
            return await self._basic(credentials)
        raise AuthenticationError(f"unsupported authorization scheme {scheme!r}; use Bearer")

    async def password_login(self, username: str, password: str) -> TokenPair:
        """Log in with a password: a token pair, or AuthenticationError / LoginLocked."""
        user = await self._check_password(username, password)
        return await self.tokens.issue_token_pair(user.username)

    async def check_password(self, username: str, password: str) -> User:
        """The user if the password is theirs; AuthenticationError / LoginLocked otherwise.

        Failures count towards the account's lockout like failed logins.
        """
        return await self._check_password(username, password)

    async def principal_for_user(
        self, username: str, *, jti: str | None = None, token_expires_at: int | None = None
    ) -> Principal | None:
        """A user's principal with their current roles; None if the user no longer exists."""
        user = await self.users.get(username)
        if user is None:
            return None
        return Principal(
            kind="user",
            username=user.username,
            is_admin=user.is_admin,
            project_roles=await self.users.roles_of(user.username),
            jti=jti,
            token_expires_at=token_expires_at,
        )

    async def principal_for_api_key(self, record: ApiKey) -> Principal | None:
        user = await self.users.get(record.username)
        if user is None:
            return None
        return Principal(
            kind="api_key",
            username=user.username,
            is_admin=user.is_admin,
            project_roles=await self.users.roles_of(user.username),
            scopes=frozenset(record.scopes),
            key_id=record.id,
        )

    def _is_admin_key(self, value: str) -> bool:
        return bool(self.admin_api_key) and hmac.compare_digest(
            value.encode(), self.admin_api_key.encode()
        )

    async def _bearer(self, token: str) -> Principal:
        if self._is_admin_key(token):
            return admin_key_principal()
        if looks_like_api_key(token):
            return await self._api_key(token)
        try:
            claims = await self.tokens.verify_access_token(token)
        except InvalidToken as error:
            raise AuthenticationError(str(error)) from None
        principal = await self.principal_for_user(
            claims.sub, jti=claims.jti, token_expires_at=claims.exp
        )
        if principal is None:
            raise AuthenticationError("invalid access token: the user no longer exists")
        return principal

    async def _api_key(self, plaintext: str) -> Principal:
        record = await self.api_keys.authenticate(plaintext)
        principal = await self.principal_for_api_key(record) if record else None
        if principal is None:
            raise AuthenticationError("invalid, expired or revoked API key")
        return principal

    def is_password_attempt(self, authorization: str | None) -> bool:
        """Whether the header is Basic `user:password` with a password rather than a key.

        Callers count such attempts against the login budget before checking them.
        """
        if not authorization:
            return False
        scheme, _, credentials = authorization.strip().partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            _, password = _decode_basic(credentials.strip())
        except AuthenticationError:
            return False
        return not (self._is_admin_key(password) or looks_like_api_key(password))

    async def _basic(self, credentials: str) -> Principal:
        username, password = _decode_basic(credentials)
        if self._is_admin_key(password):
            return admin_key_principal()
        if looks_like_api_key(password):
            return await self._api_key(password)
        if not self.settings.allow_password_basic:
            raise AuthenticationError(
                "passwords are not accepted on the API; use an access token or an API key"
            )
        user = await self._check_password(username, password)
        principal = await self.principal_for_user(user.username)
        if principal is None:
            raise AuthenticationError(_BAD_PASSWORD)
        return principal

    async def _check_password(self, username: str, password: str) -> User:
        username = username.strip().lower()
        locked_for = await self.login_guard.locked_for(username)
        if locked_for:
            raise LoginLocked(locked_for)
        user = await self.users.verify_password(username, password)
        if user is None:
            lock = await self.login_guard.record_failure(username)
            if lock:
                log.warning("account locked after failed logins", extra={"username": username})
                raise LoginLocked(lock)
            raise AuthenticationError(_BAD_PASSWORD)
        await self.login_guard.record_success(username)
        return user


def _decode_basic(credentials: str) -> tuple[str, str]:
    """`(user, password)` of Basic credentials; raises AuthenticationError when malformed."""
    try:
        decoded = base64.b64decode(credentials, validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        raise AuthenticationError("malformed Basic credentials") from None
    username, separator, password = decoded.partition(":")
    if not separator:
        raise AuthenticationError("malformed Basic credentials")
    return username, password
