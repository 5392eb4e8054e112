"""Settings for every GoBuild service, read once from `GOBUILD_*` environment variables.

This is the single source of truth for configuration; `.env.example` documents each field.
`Settings` is what every service reads; `AuthSettings` (identity and access) and
`GatewaySettings` are the parts only the gateway and the auth package read.
"""

from __future__ import annotations

from enum import StrEnum
from functools import cached_property
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

ENV_PREFIX = "GOBUILD_"
# Every settings class reads `GOBUILD_*` variables, then `.env` in the working directory.
FROM_ENVIRONMENT = SettingsConfigDict(env_prefix=ENV_PREFIX, env_file=".env", extra="ignore")


class Settings(BaseSettings):
    """All settings of a GoBuild installation; each service reads the part it needs."""

    model_config = FROM_ENVIRONMENT

    # Where state that is not in Redis lives: artifacts, logs, deployments, workspaces.
    data_dir: Path = Path("data")

    # Network: each service binds to `bind_host` on its own port.
    bind_host: str = "127.0.0.1"
    gateway_port: int = 8080
    orchestrator_port: int = 8081
    storage_port: int = 8082
    # How the gateway and builders reach the other services.
    storage_url: str = "http://127.0.0.1:8082"
    orchestrator_url: str = "http://127.0.0.1:8081"
    # Public URL of the gateway, used in links shown to users (defaults from the port).
    public_url: str = ""

    # Authentication. The admin API key is accepted as Bearer token or Basic password.
    admin_api_key: str = ""
    # Shared secret between services (storage, orchestrator); empty disables the check.
    internal_token: str = ""

    # Deployments are served at <deployment-id>.<deploy_domain> and <project>.<deploy_domain>.
    deploy_domain: str = "localhost"

    # Infrastructure.
    kafka_bootstrap: str = "localhost:9092"
    kafka_partitions: int = Field(default=4, ge=1)
    kafka_replication: int = Field(default=1, ge=1)
    redis_url: str = "redis://localhost:6379/0"

    # Builds.
    build_image: str = "gobuild/build-base:bookworm"
    # "missing": pull a build image the engine does not have; "never": only use local images.
    build_pull_policy: Literal["missing", "never"] = "missing"
    build_pull_timeout_seconds: int = Field(default=600, ge=1)
    build_timeout_seconds: int = Field(default=900, ge=1)
    build_memory_mb: int = Field(default=2048, ge=16)
    build_cpus: float = Field(default=1.0, gt=0)
    build_pids_limit: int = Field(default=512, ge=16)
    build_user: str = "1000:1000"
    build_network: str = "bridge"
    builder_concurrency: int = Field(default=1, ge=1)
    builder_id: str = ""
    log_flush_interval_ms: int = Field(default=50, ge=1)
    log_batch_lines: int = Field(default=200, ge=1)

    # Webhooks: how long a delivery id is remembered to drop redeliveries.
    webhook_dedupe_seconds: int = Field(default=7 * 24 * 3600, ge=60)
    max_body_bytes: int = Field(default=25 * 1024 * 1024, ge=1024)

    # `gobuild dev`: start the embedded broker and a local Redis server.
    dev_embedded_kafka: bool = True
    dev_embedded_redis: bool = True

    @field_validator("data_dir")
    @classmethod
    def _absolute_data_dir(cls, value: Path) -> Path:
        return value.expanduser().resolve()

    @cached_property
    def gateway_public_url(self) -> str:
        return self.public_url.rstrip("/") or f"http://localhost:{self.gateway_port}"

    @property
    def artifacts_dir(self) -> Path:
        return self.data_dir / "artifacts"

    @property
    def logs_dir(self) -> Path:
        return self.data_dir / "logs"

    @property
    def deployments_dir(self) -> Path:
        return self.data_dir / "deployments"

    @property
    def workspaces_dir(self) -> Path:
        return self.data_dir / "workspaces"

    def deployment_url(self, host_label: str) -> str:
        """The URL at which a deployment (or a project alias) is served by the gateway.

        Scheme and port follow GOBUILD_PUBLIC_URL when it is set (a proxy on 443, say),
        else the gateway's own port over http.
        """
        if self.public_url:
            public = urlsplit(self.public_url)
            port = f":{public.port}" if public.port else ""
            return f"{public.scheme}://{host_label}.{self.deploy_domain}{port}/"
        port = "" if self.gateway_port == 80 else f":{self.gateway_port}"
        return f"http://{host_label}.{self.deploy_domain}{port}/"


# HS256 wants a key at least as long as its output (RFC 7518 §3.2).
MIN_JWT_SECRET_LENGTH = 32


class RateLimitBucket(StrEnum):
    """Independent rate-limit budgets: API calls, login attempts, webhook deliveries."""

    API = "api"
    LOGIN = "login"
    WEBHOOK = "webhook"


class AuthSettings(BaseSettings):
    """Authentication, authorization, rate limiting and sign-in providers."""

    model_config = FROM_ENVIRONMENT

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


class GatewaySettings(BaseSettings):
    """What only the gateway reads: backpressure, webhook secret rotation, the sign-in
    redirect, the size of JSON API bodies and the client address behind proxies."""

    model_config = FROM_ENVIRONMENT

    # Backpressure: at most this many accepted triggers may wait for the orchestrator; beyond
    # it, webhooks and "build now" answer 503 with Retry-After and record nothing.
    max_pending_triggers: int = Field(default=1000, ge=1)
    trigger_retry_after_seconds: int = Field(default=30, ge=1)

    # After a webhook secret is rotated, the previous secret is still accepted this long.
    webhook_secret_grace_seconds: int = Field(default=24 * 3600, ge=0)

    # Where GitHub / GitLab sign-in lands, with `?code=<one-time code>` for
    # `POST /api/auth/exchange`. Empty: the gateway's public URL.
    dashboard_url: str = ""

    # Largest JSON body of an `/api` request, in bytes (webhooks use GOBUILD_MAX_BODY_BYTES).
    max_api_body_bytes: int = Field(default=64 * 1024, ge=1024)

    # Reverse proxies in front of the gateway that append to X-Forwarded-For; 0 trusts none
    # and rate-limits by the connecting address.
    trusted_proxy_hops: int = Field(default=0, ge=0)
