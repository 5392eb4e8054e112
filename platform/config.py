"""Settings for every GoBuild service, read once from `GOBUILD_*` environment variables.

This is the single source of truth for configuration; `.env.example` documents each field.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

ENV_PREFIX = "GOBUILD_"


class Settings(BaseSettings):
    """All settings of a GoBuild installation; each service reads the part it needs."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, env_file=".env", extra="ignore")

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
        """The URL at which a deployment (or a project alias) is served by the gateway."""
        port = "" if self.gateway_port == 80 else f":{self.gateway_port}"
        return f"http://{host_label}.{self.deploy_domain}{port}/"
