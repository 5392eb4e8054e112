"""Settings of the identity and access package, read from `GOBUILD_*` environment variables."""

from __future__ import annotations

from enum import StrEnum

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

ENV_PREFIX = "GOBUILD_"
# HS256 wants a key at least as long as its output (RFC 7518 §3.2).
MIN_JWT_SECRET_LENGTH = 32


class RateLimitBucket(StrEnum):
    """Independent rate-limit budgets: API calls, login attempts, webhook deliveries."""

    API = "api"
    LOGIN = "login"
    WEBHOOK = "webhook"


class AuthSettings(BaseSettings):
    """Authentication, authorization, rate limiting and sign-in providers."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, env_file=".env", extra="ignore")

    # Access tokens (JWT, HS256). Empty secret: one is generated once and kept in Redis so
    # every gateway process signs and verifies with the same key.
    jwt_secret: str = ""
    jwt_issuer: str = "gobuild"
    jwt_audience: str = "gobuild-api"
    access_token_ttl_seconds: int = Field(default=900, ge=30)
    refresh_token_ttl_seconds: int = Field(default=30 * 24 * 3600, ge=60)

    # Browser (cookie) sessions opened by GitHub / GitLab sign-in.
    session_ttl_seconds: int = Field(default=7 * 24 * 3600, ge=60)

    # Accept `Authorization: Basic user:password` on the API (off: tokens and keys only).
    allow_password_basic: bool = False
    # Password of the `admin` user created at first start; empty: a random one is printed once.
    initial_admin_password: str = ""

    # Rate limits: at most `<bucket>_requests` per `<bucket>_window_seconds` (sliding window).
    rate_limit_api_requests: int = Field(default=600, ge=1)
    rate_limit_api_window_seconds: int = Field(default=60, ge=1)
    rate_limit_login_requests: int = Field(default=10, ge=1)
    rate_limit_login_window_seconds: int = Field(default=60, ge=1)
    rate_limit_webhook_requests: int = Field(default=120, ge=1)
    rate_limit_webhook_window_seconds: int = Field(default=60, ge=1)

    # Login lockout: after `threshold` failed logins within the failure window the account is
    # locked; each further lockout doubles the lock, up to the maximum.
    login_lockout_threshold: int = Field(default=5, ge=1)
    login_lockout_seconds: int = Field(default=300, ge=1)
    login_lockout_max_seconds: int = Field(default=24 * 3600, ge=1)
    login_failure_window_seconds: int = Field(default=900, ge=1)

    # Sign-in with GitHub / GitLab (a provider is enabled when its client id and secret are set).
    github_client_id: str = ""
    github_client_secret: str = ""
    github_url: str = "https://github.com"
    github_api_url: str = "https://api.github.com"
    gitlab_client_id: str = ""
    gitlab_client_secret: str = ""
    gitlab_url: str = "https://gitlab.com"
    # Whether a first OAuth sign-in creates a GoBuild account (off: only linked/known users).
    oauth_allow_signup: bool = True
    oauth_timeout_seconds: float = Field(default=10.0, gt=0)

    # Read-only share links to one build.
    share_link_ttl_seconds: int = Field(default=7 * 24 * 3600, ge=60)
    share_link_max_ttl_seconds: int = Field(default=90 * 24 * 3600, ge=60)

    @field_validator("jwt_secret")
    @classmethod
    def _long_enough(cls, value: str) -> str:
        if value and len(value) < MIN_JWT_SECRET_LENGTH:
            raise ValueError(
                f"GOBUILD_JWT_SECRET must be at least {MIN_JWT_SECRET_LENGTH} characters "
                "(or empty to generate one)"
            )
        return value

    @field_validator("github_url", "github_api_url", "gitlab_url")
    @classmethod
    def _no_trailing_slash(cls, value: str) -> str:
        return value.rstrip("/")

    def rate_limit(self, bucket: RateLimitBucket) -> tuple[int, int]:
        """`(limit, window_seconds)` of a bucket."""
        return (
            getattr(self, f"rate_limit_{bucket.value}_requests"),
            getattr(self, f"rate_limit_{bucket.value}_window_seconds"),
        )
