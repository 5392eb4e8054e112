"""Sign in with GitHub or GitLab (OAuth 2 authorization code flow with PKCE S256).

`authorization_url` remembers the state and PKCE verifier in Redis (10 minutes, single use);
`complete` exchanges the code and reads the provider's user; `sign_in` maps that user to a
GoBuild account. One-time login codes hand the result from the callback to the dashboard.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import secrets
import warnings
from dataclasses import dataclass
from typing import Any, Literal, get_args

import httpx
import redis.asyncio as aioredis
from authlib.common.errors import AuthlibBaseError
from authlib.common.security import generate_token
from authlib.deprecate import AuthlibDeprecationWarning

from gobuild.platform.auth.users import (
    EmailInUse,
    UserError,
    UserExists,
    UserStore,
    normalize_email,
)
from gobuild.platform.config import AuthSettings
from gobuild.platform.stores import keys

# Authlib prefers the `httpx2` package and warns when it falls back to `httpx`, which is the
# HTTP client this project uses (and respx mocks in tests).
with warnings.catch_warnings():
    warnings.simplefilter("ignore", AuthlibDeprecationWarning)
    from authlib.integrations.httpx_client import AsyncOAuth2Client

log = logging.getLogger(__name__)

OAuthProvider = Literal["github", "gitlab"]
PROVIDERS: tuple[str, ...] = get_args(OAuthProvider)
STATE_TTL_SECONDS = 600
LOGIN_CODE_TTL_SECONDS = 60
GITHUB_SCOPE = "read:user user:email"
GITLAB_SCOPE = "read_user"
_MAX_USERNAME_ATTEMPTS = 20
_USERNAME_INVALID_CHARS = re.compile(r"[^a-z0-9_.-]+")


class OAuthError(Exception):
    """Sign-in cannot go on; the message is safe to show the user."""


@dataclass(frozen=True)
class ProviderUser:
    """The account a user signed in with, as the provider describes it."""

    provider: OAuthProvider
    id: str
    username: str
    email: str | None
    email_verified: bool
    name: str | None


@dataclass(frozen=True)
class ProviderEndpoints:
    authorize_url: str
    token_url: str
    user_url: str
    scope: str
    client_id: str
    client_secret: str


def provider_endpoints(settings: AuthSettings, provider: str) -> ProviderEndpoints:
    if provider == "github":
        return ProviderEndpoints(
            authorize_url=f"{settings.github_url}/login/oauth/authorize",
            token_url=f"{settings.github_url}/login/oauth/access_token",
            user_url=f"{settings.github_api_url}/user",
            scope=GITHUB_SCOPE,
            client_id=settings.github_client_id,
            client_secret=settings.github_client_secret,
        )
    if provider == "gitlab":
        return ProviderEndpoints(
            authorize_url=f"{settings.gitlab_url}/oauth/authorize",
            token_url=f"{settings.gitlab_url}/oauth/token",
            user_url=f"{settings.gitlab_url}/api/v4/user",
            scope=GITLAB_SCOPE,
            client_id=settings.gitlab_client_id,
            client_secret=settings.gitlab_client_secret,
        )
    raise OAuthError(f"unknown sign-in provider {provider!r}; use one of: {', '.join(PROVIDERS)}")


def enabled_providers(settings: AuthSettings) -> list[str]:
    """Providers with a client id and secret configured."""
    return [
        p for p in PROVIDERS if (e := provider_endpoints(settings, p)).client_id and e.client_secret
    ]


def _username_base(login: str) -> str:
    """A valid GoBuild username close to the provider login (`Jane.Doe` -> `jane.doe`)."""
    name = _USERNAME_INVALID_CHARS.sub("-", login.lower()).lstrip("_.-")[:39]
    return name or "user"


def _candidate_usernames(base: str) -> list[str]:
    """`base`, `base-2` ... `base-10`, then a few with random suffixes."""
    suffixes = ["", *(f"-{n}" for n in range(2, 11))]
    suffixes += [f"-{secrets.token_hex(3)}" for _ in range(_MAX_USERNAME_ATTEMPTS - len(suffixes))]
    return [base[: 39 - len(suffix)].rstrip("_.-") + suffix for suffix in suffixes]


def _usable_email(email: str | None) -> str | None:
    try:
        return normalize_email(email) if email else None
    except UserError:
        return None


def _hash_code(code: str) -> str:
    return hashlib.sha256(code.encode()).hexdigest()


class OAuthSignIn:
    """GitHub / GitLab sign-in for the users of a `UserStore`."""

    def __init__(self, redis: aioredis.Redis, settings: AuthSettings, users: UserStore) -> None:
        self.redis = redis
        self.settings = settings
        self.users = users

    def _endpoints(self, provider: str) -> ProviderEndpoints:
        endpoints = provider_endpoints(self.settings, provider)
        if not (endpoints.client_id and endpoints.client_secret):
            raise OAuthError(f"sign-in with {provider} is not configured")
        return endpoints

    def _client(self, endpoints: ProviderEndpoints, redirect_uri: str) -> AsyncOAuth2Client:
        return AsyncOAuth2Client(
            client_id=endpoints.client_id,
            client_secret=endpoints.client_secret,
            token_endpoint_auth_method="client_secret_post",
            scope=endpoints.scope,
            redirect_uri=redirect_uri,
            code_challenge_method="S256",
            timeout=self.settings.oauth_timeout_seconds,
        )

    async def authorization_url(self, provider: str, redirect_uri: str) -> tuple[str, str]:
        """The provider's authorization URL to redirect the browser to, and its state."""
        endpoints = self._endpoints(provider)
        state = generate_token(32)
        code_verifier = generate_token(64)
        async with self._client(endpoints, redirect_uri) as client:
            url, _ = client.create_authorization_url(
                endpoints.authorize_url, state=state, code_verifier=code_verifier
            )
        pending = {
            "provider": provider,
            "code_verifier": code_verifier,
            "redirect_uri": redirect_uri,
        }
        await self.redis.set(keys.key_oauth_state(state), json.dumps(pending), ex=STATE_TTL_SECONDS)
        return url, state

    async def complete(
        self, provider: str, state: str, code: str, redirect_uri: str
    ) -> ProviderUser:
        """Finish the callback: check the state (once), exchange the code, read the user."""
        endpoints = self._endpoints(provider)
        raw = await self.redis.getdel(keys.key_oauth_state(state)) if state else None
        if raw is None:
            raise OAuthError("unknown or expired sign-in state; start signing in again")
        pending = json.loads(raw)
        if pending["provider"] != provider or pending["redirect_uri"] != redirect_uri:
            raise OAuthError("the sign-in state belongs to another sign-in; start again")
        if not code:
            raise OAuthError("the provider returned no authorization code")
        try:
            async with self._client(endpoints, redirect_uri) as client:
                await client.fetch_token(
                    endpoints.token_url,
                    grant_type="authorization_code",
                    code=code,
                    code_verifier=pending["code_verifier"],
                )
                if provider == "github":
                    return await self._github_user(client, endpoints)
                return await self._gitlab_user(client, endpoints)
        except AuthlibBaseError as error:
            log.warning("oauth token exchange failed", extra={"provider": provider})
            detail = error.description or error.error
            raise OAuthError(f"{provider} refused the sign-in: {detail}") from None
        except (httpx.HTTPError, ValueError, KeyError, TypeError) as error:
            log.warning(
                "oauth provider request failed",
                extra={"provider": provider, "error": repr(error)},
            )
            raise OAuthError(f"could not complete sign-in with {provider}; try again") from None

    async def _github_user(
        self, client: AsyncOAuth2Client, endpoints: ProviderEndpoints
    ) -> ProviderUser:
        headers = {"Accept": "application/vnd.github+json", "X-GitHub-Api-Version": "2022-11-28"}
        response = await client.get(endpoints.user_url, headers=headers)
        response.raise_for_status()
        user: dict[str, Any] = response.json()
        # The verified primary email if there is one; else the public email (verified if
        # /user/emails says so); else the unverified primary.
        email, verified = user.get("email"), False
        response = await client.get(f"{endpoints.user_url}/emails", headers=headers)
        if response.is_success:
            emails = [e for e in response.json() if isinstance(e, dict) and e.get("email")]
            primary = next((e for e in emails if e.get("primary")), None)
            if primary is not None and primary.get("verified"):
                email, verified = primary["email"], True
            elif email:
                verified = any(e["email"] == email and e.get("verified") for e in emails)
            elif primary is not None:
                email = primary["email"]
        return ProviderUser(
            provider="github",
            id=str(user["id"]),
            username=str(user["login"]),
            email=email or None,
            email_verified=bool(email and verified),
            name=user.get("name") or None,
        )

    async def _gitlab_user(
        self, client: AsyncOAuth2Client, endpoints: ProviderEndpoints
    ) -> ProviderUser:
        response = await client.get(endpoints.user_url)
        response.raise_for_status()
        user: dict[str, Any] = response.json()
        email = user.get("email") or None
        return ProviderUser(
            provider="gitlab",
            id=str(user["id"]),
            username=str(user["username"]),
            email=email,
            email_verified=bool(email and user.get("confirmed_at")),
            name=user.get("name") or None,
        )

    async def sign_in(self, provider_user: ProviderUser) -> str:
        """The GoBuild username for a provider account, linking or creating it as needed.

        Order: the account linked to this identity; else the user with this *verified* email
        (an unverified email never links); else a new user named after the provider login.
        """
        provider, provider_id = provider_user.provider, provider_user.id
        linked = await self.users.find_by_identity(provider, provider_id)
        if linked is not None:
            return linked.username
        if provider_user.email and provider_user.email_verified:
            owner = await self.users.find_by_email(provider_user.email)
            if owner is not None and await self.users.link_identity(
                provider, provider_id, owner.username
            ):
                log.info(
                    "identity linked by verified email",
                    extra={"username": owner.username, "provider": provider},
                )
                return owner.username
        if not self.settings.oauth_allow_signup:
            raise OAuthError(
                f"no GoBuild account is linked to this {provider} account; ask an admin"
            )
        username = await self._create_user(provider_user)
        if not await self.users.link_identity(provider, provider_id, username):
            # A concurrent sign-in of the same identity won: use its account.
            await self.users.delete(username)
            winner = await self.users.find_by_identity(provider, provider_id)
            if winner is None:
                raise OAuthError("sign-in raced with another one; try again")
            return winner.username
        return username

    async def _create_user(self, provider_user: ProviderUser) -> str:
        base = _username_base(provider_user.username)
        email, verified = _usable_email(provider_user.email), provider_user.email_verified
        for username in _candidate_usernames(base):
            while True:
                try:
                    await self.users.create(
                        username, email=email, email_verified=verified, name=provider_user.name
                    )
                except EmailInUse:
                    verified = False  # another user owns it (and linking was refused)
                    continue
                except UserExists:
                    break
                log.info(
                    "user created by sign-in",
                    extra={"username": username, "provider": provider_user.provider},
                )
                return username
        raise OAuthError("could not find a free username; ask an admin to create the account")

    # One-time login codes: the callback redirects with a code the dashboard redeems once.

    async def issue_login_code(self, username: str) -> str:
        code = secrets.token_urlsafe(32)
        await self.redis.set(
            keys.key_login_code(_hash_code(code)), username, ex=LOGIN_CODE_TTL_SECONDS
        )
        return code

    async def redeem_login_code(self, code: str) -> str | None:
        """The username the code was issued for, once; None if unknown, used or expired."""
        if not code:
            return None
        return await self.redis.getdel(keys.key_login_code(_hash_code(code)))
