"""Records kept in Redis: projects, builds and deployments (the shapes the API returns)."""

from __future__ import annotations

import secrets
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from gobuild.platform.build_state import BuildState
from gobuild.platform.events import ArtifactRef, utcnow

# A project name is a DNS label: it becomes <name>.<deploy-domain>.
PROJECT_NAME_PATTERN = r"^[a-z0-9](?:[a-z0-9-]{0,38}[a-z0-9])?$"
_ID_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789"

Provider = Literal["github", "gitlab", "git"]


def new_id(prefix: str, length: int = 12) -> str:
    """A random, URL- and DNS-safe id such as `b_k3j9x0a1q2w8`."""
    return prefix + "".join(secrets.choice(_ID_ALPHABET) for _ in range(length))


def new_deployment_id(project_name: str) -> str:
    """Deployment ids are DNS labels: `<project>-<10 random chars>`, like Vercel's."""
    suffix = "".join(secrets.choice(_ID_ALPHABET) for _ in range(10))
    return f"{project_name[:50]}-{suffix}"


class Project(BaseModel):
    id: str
    name: str = Field(pattern=PROJECT_NAME_PATTERN)
    repo_url: str
    provider: Provider
    production_branch: str = "main"
    build_tags: bool = False
    webhook_secret: str
    created_at: datetime = Field(default_factory=utcnow)

    def public(self) -> dict[str, object]:
        """The project as the API shows it; the webhook secret is only shown on creation."""
        return self.model_dump(mode="json", exclude={"webhook_secret"})


class Build(BaseModel):
    id: str
    project_id: str
    number: int | None = None
    state: BuildState = BuildState.QUEUED
    source: str
    repo_url: str
    ref: str
    branch: str | None = None
    tag: str | None = None
    commit_sha: str | None = None
    commit_message: str | None = None
    author: str | None = None
    production: bool = False
    step: str | None = None
    reason: str | None = None
    builder_id: str | None = None
    attempt: int = 0
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)
    started_at: datetime | None = None
    finished_at: datetime | None = None
    duration_seconds: float | None = None
    artifact: ArtifactRef | None = None
    deployment_id: str | None = None
    deployment_url: str | None = None


class Deployment(BaseModel):
    id: str
    project_id: str
    build_id: str
    number: int
    branch: str | None = None
    commit_sha: str | None = None
    url: str
    created_at: datetime = Field(default_factory=utcnow)


class ProductionAlias(BaseModel):
    deployment_id: str
    number: int
