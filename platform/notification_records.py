"""Records of the notifications kept in Redis: outgoing hooks, e-mail preferences and the
deliveries (queued, sent, given up) the delivery log shows.

The gateway writes hooks and preferences; the notification service reads them and owns the
deliveries.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal, get_args

from pydantic import BaseModel, Field

from gobuild.platform.events import utcnow

# The pipeline stages a receiver may subscribe to.
NotificationStage = Literal["started", "succeeded", "failed", "cancelled", "deployed", "promoted"]
NOTIFICATION_STAGES: tuple[NotificationStage, ...] = get_args(NotificationStage)

# hook: an outgoing webhook; email: a project member; github / gitlab: the commit status.
ReceiverKind = Literal["hook", "email", "github", "gitlab"]
# superseded: a commit status that a newer one of the same build replaced before it was sent.
DeliveryStatus = Literal["queued", "sending", "delivered", "failed", "superseded"]


class Hook(BaseModel):
    """An outgoing webhook of a project."""

    id: str
    project_id: str
    url: str
    events: list[NotificationStage]
    # The signing secret, encrypted (platform.repo_credentials); never shown after creation.
    secret: str
    created_at: datetime = Field(default_factory=utcnow)
    created_by: str | None = None


class NotificationPreferences(BaseModel):
    """Which stages a user is e-mailed about, in all their projects or only in `projects`."""

    events: list[NotificationStage] = Field(default_factory=list)
    projects: list[str] | None = None

    def wants(self, stage: NotificationStage, project_id: str) -> bool:
        return stage in self.events and (self.projects is None or project_id in self.projects)


class BuildSummary(BaseModel):
    """What a message says about one build, as its events told it when the stage was reached."""

    build_id: str
    state: str
    number: int | None = None
    branch: str | None = None
    commit_sha: str | None = None
    commit_message: str | None = None
    step: str | None = None
    error: str | None = None
    deployment_url: str | None = None


class Delivery(BaseModel):
    """One message to one receiver, about one or more builds that reached the same stage."""

    id: str
    project_id: str
    kind: ReceiverKind
    # The hook id, the username, or the forge's name.
    receiver: str
    # A `NotificationStage`, or for commit statuses the forge's own state (`pending`, ...).
    stage: str
    builds: list[BuildSummary]
    status: DeliveryStatus = "queued"
    attempts: int = 0
    response_code: int | None = None
    error: str | None = None
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)
    next_attempt_at: datetime | None = None
    # Commit statuses of one build and forge go out in order; a newer rank supersedes.
    ordering_key: str | None = None
    rank: int = 0
