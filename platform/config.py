"""Settings for every GoBuild service, read once from `GOBUILD_*` environment variables.

This is the single source of truth for configuration; `.env.example` documents each field.
`Settings` is what every service reads; `AuthSettings` (identity and access) and
`GatewaySettings` are the parts only the gateway and the auth package read.
"""

from __future__ import annotations

from datetime import UTC
from enum import StrEnum
from functools import cached_property
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from apscheduler.triggers.cron import CronTrigger
from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

ENV_PREFIX = "GOBUILD_"
# Every settings class reads `GOBUILD_*` variables, then `.env` in the working directory.
FROM_ENVIRONMENT = SettingsConfigDict(env_prefix=ENV_PREFIX, env_file=".env", extra="ignore")
# GOBUILD_SECRET_KEY, when set, is at least this long.
MIN_SECRET_KEY_LENGTH = 32
# Where Debian, Ubuntu and Alpine keep the system's bundle of trusted CAs: `gobuild dev` has
# builds trust it (GOBUILD_BUILD_CA_BUNDLE), and builders add the extra CAs to it.
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")


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
    notifications_port: int = 8083
    # The retention service answers only /healthz on its port.
    retention_port: int = 8084
    # The status dashboard (a web page for people; its links point at the gateway).
    dashboard_port: int = 8090
    # How the gateway and builders reach the other services.
    storage_url: str = "http://127.0.0.1:8082"
    orchestrator_url: str = "http://127.0.0.1:8081"
    # How the dashboard reaches the gateway's API (empty: http://127.0.0.1:<gateway port>).
    gateway_url: str = ""
    # Public URL of the gateway, used in links shown to users (defaults from the port).
    public_url: str = ""

    # Authentication. The admin API key is accepted as Bearer token or Basic password.
    admin_api_key: str = ""
    # Shared secret the gateway and builders present to storage; storage and the gateway
    # refuse to start without it (`gobuild dev` generates one).
    internal_token: str = ""
    # Key the credentials of repository URLs are encrypted with (at least 32 characters). Empty:
    # one is generated once and kept in Redis, shared by the gateways and builders.
    secret_key: str = ""
    # Whether instance admins may register local repository paths (`/srv/git/site.git`); they
    # are cloned by bind-mounting that one folder read-only into the clone container.
    allow_local_repos: bool = False

    # Deployments are served at <deployment-id>.<deploy_domain> and <project>.<deploy_domain>.
    deploy_domain: str = "localhost"

    # Infrastructure.
    kafka_bootstrap: str = "localhost:9092"
    kafka_partitions: int = Field(default=4, ge=1)
    kafka_replication: int = Field(default=1, ge=1)
    # Retention of `build-logs` (set when the topic is created): storage keeps the logs, the
    # broker only needs them until storage and live viewers have read them. Bytes are per
    # partition; -1 means no size limit.
    kafka_log_retention_hours: int = Field(default=24, ge=1)
    kafka_log_retention_bytes: int = Field(default=1024**3, ge=-1)
    redis_url: str = "redis://localhost:6379/0"

    # Builds.
    build_image: str = "gobuild/build-base:bookworm"
    # Images a build may use from the engine's local copies (GOBUILD_BUILD_IMAGE always is);
    # comma-separated. Any other image a repository names is pulled fresh from its registry
    # ("missing") or refused ("never").
    build_trusted_images: Annotated[list[str], NoDecode] = []
    # "missing": pull a build image the engine does not have; "never": only use local images.
    build_pull_policy: Literal["missing", "never"] = "missing"
    build_pull_timeout_seconds: int = Field(default=600, ge=1)
    build_timeout_seconds: int = Field(default=900, ge=1)
    build_memory_mb: int = Field(default=2048, ge=16)
    build_cpus: float = Field(default=1.0, gt=0)
    build_pids_limit: int = Field(default=512, ge=16)
    build_user: str = "1000:1000"
    # Created by the builder at start (a bridge without inter-container traffic) unless it
    # exists or is one of Docker's own (bridge, host, none).
    build_network: str = "gobuild-builds"
    # The steps run in the build's clone container (kept after the checkout) when they need
    # nothing it lacks: the same image and limits, no `dockerfile`. One container start per
    # build instead of two; a local repository's checkout is then on the build network too.
    # False: every step in a fresh container of its own.
    build_steps_in_clone_container: bool = True
    # A build's clone container is kept this long after the build, made as good as new (its
    # processes killed, what the build user may write emptied), for the next build of the
    # same project with the same image and limits: a `docker exec` instead of a container
    # start. Never shared between projects. 0: every build starts a container of its own.
    build_container_reuse_seconds: float = Field(default=120.0, ge=0)
    # How many builds one warm container serves before it is replaced.
    build_container_max_uses: int = Field(default=50, ge=1)
    # Extra certificate authorities (a PEM file) build and clone containers trust besides the
    # system ones, e.g. a TLS-inspecting proxy's; empty: only the image's own. `gobuild dev`
    # passes the host's bundle when this is unset.
    build_ca_bundle: Path | None = None
    # Caches (dependency downloads, `gobuild.toml` `cache` folders) storage keeps per project, in
    # bytes: beyond it the least recently used go; a single cache larger than it is not saved.
    cache_max_bytes: int = Field(default=2 * 1024**3, ge=1024 * 1024)
    # Images each builder built from repositories' `dockerfile`s (layer cache), in bytes on
    # that builder's engine: beyond it the least recently used images are removed.
    layer_cache_max_bytes: int = Field(default=10 * 1024**3, ge=1024 * 1024)
    builder_concurrency: int = Field(default=1, ge=1)
    builder_id: str = ""
    # Labels this builder announces (comma-separated, `arch=amd64,node`); a project that
    # requires labels is built only by builders that have them all.
    builder_labels: str = ""
    # Scheduling. A build waiting in the queue longer than this ends `timed_out`.
    queue_timeout_seconds: int = Field(default=3600, ge=1)
    # Production builds and redeploys go first by this head start; a preview build that has
    # waited longer than it goes before newer production builds (aging: none starves).
    queue_priority_boost_seconds: float = Field(default=600.0, ge=0)
    # A builder assigned a job that has not claimed it within this many seconds gets it again
    # (the job was lost on the way); a builder silent past its heartbeat is lost.
    dispatch_claim_timeout_seconds: float = Field(default=15.0, gt=0)
    log_flush_interval_ms: int = Field(default=50, ge=1)
    log_batch_lines: int = Field(default=200, ge=1)
    # Bounds on one build's log: total bytes, then output is dropped (the build goes on);
    # lines per second (token bucket with a burst), lines over the rate are dropped.
    build_log_max_bytes: int = Field(default=64 * 1024 * 1024, ge=1024)
    build_log_max_lines_per_second: int = Field(default=1000, ge=1)
    build_log_line_burst: int = Field(default=10_000, ge=1)
    # Recovery from a lost builder or broker. A build whose builder is lost (its heartbeat
    # gone, no live builder holding it) goes back to the front of the queue, at most
    # `build_max_attempts` attempts in all (then it fails with the reason). Every
    # `reconcile_interval_seconds` the orchestrator also looks at every unfinished build: one
    # left outside the queue for `reconcile_grace_seconds` is queued again, and a running one
    # past its time limit plus the grace ends timed out.
    reconcile_interval_seconds: float = Field(default=15.0, gt=0)
    reconcile_grace_seconds: float = Field(default=60.0, gt=0)
    build_max_attempts: int = Field(default=3, ge=1)

    # Webhooks: how long a delivery id (or an id-less body's SHA-256) is remembered to drop
    # redeliveries.
    webhook_dedupe_seconds: int = Field(default=7 * 24 * 3600, ge=60)
    max_body_bytes: int = Field(default=25 * 1024 * 1024, ge=1024)

    # Outgoing webhooks (and per-project forge URLs) may go to loopback, link-local and private
    # addresses; off: such URLs are refused when registered and again before every delivery.
    hooks_allow_private_addresses: bool = False

    # `gobuild dev`: start the embedded broker and a local Redis server.
    dev_embedded_kafka: bool = True
    dev_embedded_redis: bool = True
    # `gobuild dev`: run a builder agent of its own (off: only builders started elsewhere,
    # `python -m gobuild.builder_agent` with the same settings, build).
    dev_builder: bool = True

    @field_validator("data_dir")
    @classmethod
    def _absolute_data_dir(cls, value: Path) -> Path:
        return value.expanduser().resolve()

    @field_validator("build_ca_bundle", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("secret_key")
    @classmethod
    def _secret_key_long_enough(cls, value: str) -> str:
        if value and len(value) < MIN_SECRET_KEY_LENGTH:
            raise ValueError(
                f"GOBUILD_SECRET_KEY must be at least {MIN_SECRET_KEY_LENGTH} characters "
                "(or empty to generate one)"
            )
        return value

    @field_validator("build_trusted_images", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        if isinstance(value, str):
            return [name.strip() for name in value.split(",") if name.strip()]
        return value

    @property
    def trusted_build_images(self) -> frozenset[str]:
        """The build images taken from the engine's local copies without a fresh pull."""
        return frozenset({self.build_image, *self.build_trusted_images})

    @cached_property
    def gateway_public_url(self) -> str:
        return self.public_url.rstrip("/") or f"http://localhost:{self.gateway_port}"

    @property
    def gateway_api_url(self) -> str:
        """Where the dashboard sends its API calls (server to server)."""
        return self.gateway_url.rstrip("/") or f"http://127.0.0.1:{self.gateway_port}"

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
    def caches_dir(self) -> Path:
        return self.data_dir / "caches"

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


class NotificationSettings(BaseSettings):
    """What only the notification service reads: SMTP, and how deliveries are paced and retried.

    The forge API URLs (GOBUILD_GITHUB_API_URL, GOBUILD_GITLAB_URL) come from `AuthSettings`,
    the build page links from GatewaySettings' `dashboard_url`.
    """

    model_config = FROM_ENVIRONMENT

    # E-mail to project members who opted in (`PUT /api/me/notifications`); no host: no e-mail.
    smtp_host: str = ""
    smtp_port: int = Field(default=587, ge=1, le=65535)
    smtp_username: str = ""
    smtp_password: str = ""
    smtp_from: str = "GoBuild <gobuild@localhost>"
    smtp_starttls: bool = True

    # One attempt at a delivery (webhook, commit status, e-mail) may take this long.
    notification_timeout_seconds: float = Field(default=10.0, gt=0)
    # Attempts before a delivery is given up (5xx, timeouts, connection errors are retried with
    # exponential backoff from `retry_base_seconds`, doubling, at most an hour apart).
    notification_max_attempts: int = Field(default=5, ge=1)
    notification_retry_base_seconds: float = Field(default=5.0, gt=0)
    # Deliveries in flight at once per notification process.
    notification_concurrency: int = Field(default=16, ge=1)
    # A webhook or e-mail waits this long for more builds reaching the same stage, sent then
    # as one message (a burst of builds is not a burst of messages).
    notification_coalesce_seconds: float = Field(default=2.0, ge=0)


class RetentionSettings(BaseSettings):
    """What the retention job and the gateway's retention routes read: the instance's default
    policy (projects may override it) and when the job runs."""

    model_config = FROM_ENVIRONMENT

    # Artifacts and logs of finished builds are kept this many days, and those of the newest
    # `keep_last` builds of each project whatever their age.
    retention_artifact_days: int = Field(default=30, ge=1, le=36500)
    retention_keep_last: int = Field(default=10, ge=0, le=100_000)
    # Deployments (files and records) older than this are removed.
    retention_deployment_days: int = Field(default=30, ge=1, le=36500)
    # Build records (and every Redis key of the build) older than this are removed; a record
    # is always kept at least as long as its artifacts, log and deployment.
    retention_record_days: int = Field(default=180, ge=1, le=36500)
    # Dependency and incremental caches no build used for this many days are removed (each
    # builder prunes its own layer-cache images).
    retention_cache_days: int = Field(default=14, ge=1, le=36500)
    # The job runs every `interval_minutes`, or on the crontab schedule `cron` when it is set
    # (five fields, UTC, e.g. "0 3 * * *").
    retention_interval_minutes: int = Field(default=60, ge=1)
    retention_cron: str = ""
    # Scheduled runs (and `POST /api/admin/retention/run` without `dry_run`) only report what
    # they would remove.
    retention_dry_run: bool = False

    @field_validator("retention_cron")
    @classmethod
    def _crontab(cls, value: str) -> str:
        value = value.strip()
        if value:
            try:
                CronTrigger.from_crontab(value, timezone=UTC)
            except ValueError as exc:
                raise ValueError(f"GOBUILD_RETENTION_CRON is not a crontab line: {exc}") from None
        return value

    @model_validator(mode="after")
    def _records_outlive_files(self) -> RetentionSettings:
        longest = max(self.retention_artifact_days, self.retention_deployment_days)
        if self.retention_record_days < longest:
            raise ValueError(
                "GOBUILD_RETENTION_RECORD_DAYS must be at least GOBUILD_RETENTION_ARTIFACT_DAYS "
                "and GOBUILD_RETENTION_DEPLOYMENT_DAYS (a build record outlives its files)"
            )
        return self
