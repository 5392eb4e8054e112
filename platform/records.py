"""Records kept in Redis: projects, builds and deployments (the shapes the API returns)."""

from __future__ import annotations

import secrets
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from gobuild.platform.build_state import BuildState
from gobuild.platform.events import ArtifactRef, CacheUse, TriggerSource, utcnow
from gobuild.platform.repo_url import redact_url

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
    # As shown: credentials the URL was registered with are `***` here (see repo_credentials).
    repo_url: str
    provider: Provider
    production_branch: str = "main"
    build_tags: bool = False
    webhook_secret: str
    created_at: datetime = Field(default_factory=utcnow)
    # The `user:token` of the registered URL, encrypted (platform.repo_credentials); only
    # builders decrypt it, right before they fetch.
    repo_credentials: str | None = None
    # Registered by an instance admin: the repository may be a local path (when
    # GOBUILD_ALLOW_LOCAL_REPOS is on) or on an internal network (platform.repo_url).
    trusted_source: bool = False
    # The token commit statuses are sent to GitHub / GitLab with, encrypted
    # (platform.repo_credentials); write-only in the API, read by the notification service.
    forge_token: str | None = None
    # The forge's API base URL for this project (GitHub Enterprise, a self-hosted GitLab);
    # None: GOBUILD_GITHUB_API_URL or GOBUILD_GITLAB_URL.
    forge_url: str | None = None
    # Build settings (`PATCH /api/projects/{id}`); gobuild.toml overrides each, None: detected.
    install_command: str | None = None
    build_command: str | None = None
    output_dir: str | None = None
    image: str | None = None
    # The monorepo subfolder that is built; None: the repository root.
    root_dir: str | None = None
    # Scheduling (`PATCH /api/projects/{id}`). A newer push to a branch cancels that
    # branch's older queued and running builds.
    auto_cancel: bool = True
    # At most this many of its builds run at once; None: no limit of its own.
    concurrency_limit: int | None = None
    # Labels a builder must have to build it (`arch=amd64`, `node`).
    required_labels: list[str] = Field(default_factory=list)
    # Its own build time limit, in seconds; may only lower GOBUILD_BUILD_TIMEOUT_SECONDS.
    build_timeout_seconds: int | None = None
    # Ids of the projects it depends on: a successful production build of one of them builds
    # this project's production branch again, after it (no cycles: refused when saved).
    depends_on: list[str] = Field(default_factory=list)

    def public(self) -> dict[str, object]:
        """The project as the API shows it; the webhook secret is only shown on creation and
        repository credentials and the forge token never are."""
        shown = self.model_dump(
            mode="json",
            exclude={"webhook_secret", "repo_credentials", "trusted_source", "forge_token"},
        )
        shown["repo_url"] = redact_url(self.repo_url)
        shown["forge_token_set"] = self.forge_token is not None
        return shown


BuildTarget = Literal["production", "preview"]
BUILD_TARGETS: tuple[BuildTarget, ...] = ("production", "preview")


class BuildVariable(BaseModel):
    """An environment variable of a project's builds, for production builds, preview builds
    (every other branch) or both."""

    name: str
    # A secret's value is encrypted (platform.repo_credentials, BUILD_SECRETS_PURPOSE).
    value: str
    secret: bool = False
    targets: list[BuildTarget]
    # Who set it last (None: the admin API key), and when.
    updated_by: str | None = None
    updated_at: datetime = Field(default_factory=utcnow)


StepState = Literal["running", "succeeded", "failed", "cancelled", "timed_out"]


class BuildStep(BaseModel):
    """One step a build ran (checkout, the repository's steps, upload, deploy) and how long."""

    name: str
    state: StepState = "running"
    started_at: datetime
    finished_at: datetime | None = None
    duration_seconds: float | None = None


class Build(BaseModel):
    id: str
    project_id: str
    number: int | None = None
    state: BuildState = BuildState.QUEUED
    source: TriggerSource
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
    # Set when a newer push to its branch cancelled it (auto-cancel): that build's id.
    superseded_by: str | None = None
    # Set on a build a successful production build of a dependency started: that build's id.
    triggered_by: str | None = None
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)
    started_at: datetime | None = None
    finished_at: datetime | None = None
    duration_seconds: float | None = None
    artifact: ArtifactRef | None = None
    deployment_id: str | None = None
    deployment_url: str | None = None
    # The highest CPU (percent of one CPU) and memory use of its step containers.
    peak_cpu_percent: float | None = None
    peak_memory_bytes: int | None = None
    # For each cache: hit, partial or miss, its key and size, restore and save time.
    caches: list[CacheUse] = Field(default_factory=list)
    # The steps of its latest attempt, in order, from the builder's status events.
    steps: list[BuildStep] = Field(default_factory=list)


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
    # None in aliases set before it was recorded: the deployment record has it too.
    commit_sha: str | None = None
    # Promoted by hand: new production deployments do not take the alias until it is un-pinned.
    pinned: bool = False
