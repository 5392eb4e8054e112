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

ALL_TOPICS = (
    TOPIC_BUILD_TRIGGERS,
    TOPIC_BUILD_REQUESTS,
    TOPIC_BUILD_STATUS,
    TOPIC_BUILD_LOGS,
    TOPIC_BUILD_COMPLETIONS,
    TOPIC_DEPLOYMENT_STATUS,
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
    env: dict[str, str] = Field(default_factory=dict)
    timeout_seconds: int = Field(ge=1)
    memory_mb: int = Field(ge=16)
    cpus: float = Field(gt=0)
    pids_limit: int = Field(ge=16)


TriggerSource = Literal["github", "gitlab", "api", "redeploy"]


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
    repo_url: str
    ref: str
    branch: str | None
    commit_sha: str | None
    production: bool
    config: BuildConfig
    cache_key: str
    priority: int = 0
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


class DeploymentStatusChanged(Event):
    """A deployment was created, became ready, was promoted to production, or failed."""

    type: Literal["deployment.status"] = "deployment.status"
    deployment_id: str
    build_id: str
    project_id: str
    state: Literal["created", "ready", "promoted", "rolled_back", "failed"]
    url: str | None = None
    alias_url: str | None = None
    reason: str | None = None


AnyEvent = Annotated[
    BuildTriggered
    | BuildRequested
    | BuildStatusChanged
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
