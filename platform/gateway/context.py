"""What a gateway request handler may use: settings and the connections opened at startup."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import httpx
import redis.asyncio as aioredis
from quart import current_app

from gobuild.platform.auth.service import AuthService
from gobuild.platform.bus import EventProducer
from gobuild.platform.config import GatewaySettings, RetentionSettings, Settings
from gobuild.platform.storage_client import internal_headers
from gobuild.platform.stores.builds import BuildStore
from gobuild.platform.stores.deployment_records import DeploymentRecords
from gobuild.platform.stores.projects import ProjectStore

EXTENSION_KEY = "gobuild.gateway"


@dataclass
class GatewayContext:
    settings: Settings
    gateway_settings: GatewaySettings
    redis: aioredis.Redis
    producer: EventProducer
    http: httpx.AsyncClient  # to the internal services (storage, orchestrator)
    auth: AuthService
    # Serialises "is there room for another trigger?" with recording it (backpressure).
    trigger_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    # The instance's retention defaults (the retention routes' policy and "run now").
    retention_settings: RetentionSettings = field(default_factory=RetentionSettings)

    @property
    def projects(self) -> ProjectStore:
        return ProjectStore(self.redis)

    @property
    def builds(self) -> BuildStore:
        return BuildStore(self.redis)

    @property
    def deployments(self) -> DeploymentRecords:
        return DeploymentRecords(self.redis)

    def internal_headers(self) -> dict[str, str]:
        """What proves to storage that a request comes from the gateway."""
        return internal_headers(self.settings.internal_token)


def gateway() -> GatewayContext:
    """The context of the running gateway app."""
    return current_app.extensions[EXTENSION_KEY]
