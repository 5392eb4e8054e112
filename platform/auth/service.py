"""Everything the gateway needs from the auth package, built once at startup."""

from __future__ import annotations

from dataclasses import dataclass

import redis.asyncio as aioredis

from gobuild.platform.auth.api_keys import ApiKeyStore
from gobuild.platform.auth.authentication import Authenticator
from gobuild.platform.auth.oauth import OAuthSignIn
from gobuild.platform.auth.ratelimit import LoginGuard, RateLimiter
from gobuild.platform.auth.sessions import BrowserSessionStore
from gobuild.platform.auth.share_links import ShareLinkStore
from gobuild.platform.auth.signing import (
    BROWSER_SESSION_PURPOSE,
    derive_secret,
    load_signing_secret,
)
from gobuild.platform.auth.tokens import TokenService
from gobuild.platform.auth.users import UserStore
from gobuild.platform.config import AuthSettings, Settings


@dataclass(frozen=True)
class AuthService:
    settings: AuthSettings
    users: UserStore
    tokens: TokenService
    api_keys: ApiKeyStore
    rate_limiter: RateLimiter
    login_guard: LoginGuard
    oauth: OAuthSignIn
    share_links: ShareLinkStore
    sessions: BrowserSessionStore
    authenticator: Authenticator
    # Key that signs the browser session cookie (derived from the signing secret).
    cookie_secret: bytes


async def create_auth_service(
    redis: aioredis.Redis, settings: Settings, auth_settings: AuthSettings | None = None
) -> AuthService:
    """Load (or create once) the signing secret and build every store on one Redis client."""
    auth_settings = auth_settings or AuthSettings()
    secret = await load_signing_secret(redis, auth_settings)
    users = UserStore(redis)
    tokens = TokenService(redis, auth_settings, secret, users)
    api_keys = ApiKeyStore(redis, users)
    login_guard = LoginGuard(redis, auth_settings)
    return AuthService(
        settings=auth_settings,
        users=users,
        tokens=tokens,
        api_keys=api_keys,
        rate_limiter=RateLimiter(redis, auth_settings),
        login_guard=login_guard,
        oauth=OAuthSignIn(redis, auth_settings, users),
        share_links=ShareLinkStore(redis, auth_settings, secret),
        sessions=BrowserSessionStore(redis, auth_settings),
        authenticator=Authenticator(
            settings=auth_settings,
            users=users,
            tokens=tokens,
            api_keys=api_keys,
            login_guard=login_guard,
            admin_api_key=settings.admin_api_key,
        ),
        cookie_secret=derive_secret(secret, BROWSER_SESSION_PURPOSE),
    )
