"""Settings only the gateway reads: backpressure, webhook secret rotation, sign-in redirect,
request size of the JSON API and the client address behind proxies (`GOBUILD_*`)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

ENV_PREFIX = "GOBUILD_"


class GatewaySettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, env_file=".env", extra="ignore")

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
