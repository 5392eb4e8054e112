"""The Kafka wire contract: topic names and one pydantic model per event type.

Every event carries `type`, `version`, `event_id` and `occurred_at`; consumers parse with
`parse_event` and skip (with a log line) whatever does not validate. Messages about one build
are keyed by its build id so their order is kept.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from gobuild.platform.build_state import BuildState

TOPIC_BUILD_TRIGGERS = "build-triggers"
TOPIC_BUILD_REQUESTS = "build-requests"
TOPIC_BUILD_STATUS = "build-status"
TOPIC_BUILD_LOGS = "build-logs"
TOPIC_BUILD_COMPLETIONS = "build-completions"
TOPIC_DEPLOYMENT_STATUS = "deployment-status"
# Not events: readiness probes the gateway sends and reads back (a produce-and-fetch check).
TOPIC_HEALTH_PROBES = "health-probes"

ALL_TOPICS = (
    TOPIC_BUILD_TRIGGERS,
    TOPIC_BUILD_REQUESTS,
    TOPIC_BUILD_STATUS,
    TOPIC_BUILD_LOGS,
    TOPIC_BUILD_COMPLETIONS,
    TOPIC_DEPLOYMENT_STATUS,
    TOPIC_HEALTH_PROBES,
)


def new_event_id() -> str:
    return uuid.uuid4().hex


def utcnow() -> datetime:
    return datetime.now(UTC)


class Event(BaseModel):
    """Fields every event has."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    version: int = 1
    event_id: str = Field(default_factory=new_event_id)
    occurred_at: datetime = Field(default_factory=utcnow)

    def key(self) -> bytes | None:
        build_id = getattr(self, "build_id", None)
        return build_id.encode() if build_id else None


class BuildConfig(BaseModel):
    """How to build: the resolved settings a builder applies (repository config may refine)."""

    model_config = ConfigDict(extra="forbid")

    image: str
    install: str | None = None
    build: str | None = None
    output: str | None = None
    # The monorepo subfolder that is built (gobuild.toml is read there, output is relative to
    # it); None: the repository root.
    root_dir: str | None = None
    # The project's plain variables for this build's target (production or preview).
    env: dict[str, str] = Field(default_factory=dict)
    # Its secret variables, encrypted (platform.repo_credentials, BUILD_SECRETS_PURPOSE): only
    # a builder decrypts them, right before a step, so they never cross the broker readable.
    secret_env: dict[str, str] = Field(default_factory=dict)
    timeout_seconds: int = Field(ge=1)
    memory_mb: int = Field(ge=16)
    cpus: float = Field(gt=0)
    pids_limit: int = Field(ge=16)


# `dependency`: a successful production build of a project this one depends on.
TriggerSource = Literal["github", "gitlab", "api", "redeploy", "dependency"]


class BuildTriggered(Event):
    """An accepted trigger: recorded in Redis by the gateway before it answered 202."""

    type: Literal["build.triggered"] = "build.triggered"
    build_id: str
    project_id: str
    source: TriggerSource
    repo_url: str
    ref: str
    branch: str | None
    tag: str | None = None
    commit_sha: str | None
    commit_message: str | None = None
    author: str | None = None
    delivery_id: str | None = None


class BuildRequested(Event):
    """A build job for the builder agents' consumer group."""

    type: Literal["build.requested"] = "build.requested"
    build_id: str
    project_id: str
    project_name: str
    number: int
    # A push (`github`, `gitlab`) is built only while its commit is still its branch's head.
    source: TriggerSource
    # As shown (credentials are `***`); the builder puts the decrypted credentials back.
    repo_url: str
    ref: str
    branch: str | None
    commit_sha: str | None
    production: bool
    config: BuildConfig
    # The project's repository credentials, encrypted (platform.repo_credentials).
    repo_credentials: str | None = None
    # The project was registered by an instance admin (platform.repo_url's policy).
    trusted_source: bool = False
    # The builder the scheduler gave the job to: only that builder runs it (None: any, from an
    # orchestrator older than the scheduler).
    builder_id: str | None = None
    # Which attempt at the build this job is (1 first; more after a lost builder).
    attempt: int = 1


class BuildStatusChanged(Event):
    """A state change of one build; every transition of the state machine is one of these."""

    type: Literal["build.status"] = "build.status"
    build_id: str
    project_id: str
    state: BuildState
    number: int | None = None
    step: str | None = None
    reason: str | None = None
    builder_id: str | None = None
    commit_sha: str | None = None
    attempt: int | None = None
    # A builder counts its status and completion events of one attempt (1, 2, ...; the
    # completion and the terminal status of its result share the last number). They travel
    # on two topics, so a consumer of both orders them by (attempt, seq); None: not counted
    # (the orchestrator's and the gateway's own events, applied before they are published).
    seq: int | None = Field(default=None, ge=1)


class LogChunk(Event):
    """Ordered lines of one build's console; `seq` counts chunks within one attempt."""

    type: Literal["build.log"] = "build.log"
    build_id: str
    project_id: str
    attempt: int = 1
    seq: int = Field(ge=0)
    stream: Literal["stdout", "stderr", "system"]
    lines: list[str]
    final: bool = False


class ArtifactRef(BaseModel):
    """Where a build's output archive is kept, and its checksum."""

    name: str
    sha256: str
    size: int


# The caches a build uses: the package manager's downloads (keyed by the lockfile), folders
# `gobuild.toml` names (`cache = [...]`, by branch) and the image built from its `dockerfile`.
CacheKind = Literal["dependencies", "incremental", "layer"]
# `partial`: not this key, but an older cache of the same kind was restored (a changed lockfile).
CacheResult = Literal["hit", "partial", "miss"]


class CacheUse(BaseModel):
    """What one cache did for one build: found or not, its key and size, and how long
    restoring and saving it took."""

    kind: CacheKind
    key: str
    result: CacheResult
    # What was restored (hit, partial) or else saved, in bytes (an image: its size).
    size_bytes: int = Field(default=0, ge=0)
    restore_seconds: float = Field(default=0.0, ge=0)
    # None: not saved (the key was there already, another build saved it, the build failed).
    save_seconds: float | None = Field(default=None, ge=0)


class BuildCompleted(Event):
    """The final result of a build."""

    type: Literal["build.completed"] = "build.completed"
    build_id: str
    project_id: str
    state: BuildState
    duration_seconds: float
    commit_sha: str | None = None
    artifact: ArtifactRef | None = None
    deployment_id: str | None = None
    deployment_url: str | None = None
    error: str | None = None
    # The builder that ran it; None when the orchestrator ended the build before any did.
    builder_id: str | None = None
    # The highest resource samples of the build's step containers (None: no step ran).
    peak_cpu_percent: float | None = None
    peak_memory_bytes: int | None = None
    # How the build used each of its caches (empty: none, or ended before any was looked at).
    caches: list[CacheUse] = Field(default_factory=list)
    # The step it ended at (None: it succeeded, or ended before any step), the attempt of the
    # builder that ran it and its place among that attempt's events (`BuildStatusChanged.seq`).
    step: str | None = None
    attempt: int | None = None
    seq: int | None = Field(default=None, ge=1)


class BuildResourceSample(Event):
    """CPU and memory of the container of the step a build is running, about once a second.

    `cpu_percent` is of one CPU (200 = two CPUs busy); `memory_limit_bytes` is the step's
    memory limit, beyond which the step is killed (out of memory).
    """

    type: Literal["build.resources"] = "build.resources"
    build_id: str
    project_id: str
    step: str
    cpu_percent: float = Field(ge=0)
    memory_bytes: int = Field(ge=0)
    memory_limit_bytes: int | None = None


class BuildErrorsFound(Event):
    """Error lines the notification service found in a build's log (`log_patterns`), published
    on `build-status` as they are found so the dashboard can list them beside the failure
    alerts that quote them. Only the first lines of a build are kept and published (a bounded
    excerpt); `step` is the step that was running when they were printed."""

    type: Literal["build.errors"] = "build.errors"
    build_id: str
    project_id: str
    attempt: int = 1
    step: str | None = None
    lines: list[str]


# `promoted`: the production alias now serves this deployment (automatically, or by hand);
# `rolled_back`: by hand, to a deployment older than the one it served. A promotion or
# rollback by hand pins the alias (`pinned`): new production builds no longer take it until
# it is `unpinned`, which also points it at the newest production deployment again.
DeploymentState = Literal["created", "ready", "promoted", "rolled_back", "pinned", "unpinned"]


class DeploymentStatusChanged(Event):
    """A deployment was created, became ready, took (or was rolled back to) the production
    alias, or the alias was pinned to it or un-pinned."""

    type: Literal["deployment.status"] = "deployment.status"
    deployment_id: str
    build_id: str
    project_id: str
    state: DeploymentState
    url: str | None = None
    alias_url: str | None = None


AnyEvent = Annotated[
    BuildTriggered
    | BuildRequested
    | BuildStatusChanged
    | BuildResourceSample
    | BuildErrorsFound
    | LogChunk
    | BuildCompleted
    | DeploymentStatusChanged,
    Field(discriminator="type"),
]
_event_adapter: TypeAdapter[Any] = TypeAdapter(AnyEvent)


class MalformedEvent(ValueError):
    """A message that is not a valid event of a known type."""


def parse_event(raw: bytes | str) -> Event:
    """Parse one message; raises MalformedEvent for bad JSON, unknown types or bad fields."""
    try:
        event = _event_adapter.validate_json(raw)
    except ValidationError as exc:
        raise MalformedEvent(str(exc).splitlines()[0]) from exc
    return event


def encode_event(event: Event) -> bytes:
    return event.model_dump_json().encode()
