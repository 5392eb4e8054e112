"""Which stage of the pipeline an event is: for webhooks and e-mail, and for commit statuses."""

from __future__ import annotations

from gobuild.platform.build_state import BuildState
from gobuild.platform.events import (
    BuildCompleted,
    BuildStatusChanged,
    DeploymentStatusChanged,
)
from gobuild.platform.notification_records import NotificationStage

_COMPLETION_STAGES: dict[BuildState, NotificationStage] = {
    BuildState.SUCCEEDED: "succeeded",
    BuildState.FAILED: "failed",
    BuildState.TIMED_OUT: "failed",
    BuildState.CANCELLED: "cancelled",
}
_DEPLOYMENT_STAGES: dict[str, NotificationStage] = {"ready": "deployed", "promoted": "promoted"}

# Stage events notifications are made of; any other event is not looked at.
StageEvent = BuildStatusChanged | BuildCompleted | DeploymentStatusChanged


def notification_stage(event: StageEvent) -> NotificationStage | None:
    """The stage webhooks and e-mail subscribe to, or None for an event that is none.

    The end of a build is taken from its completion (which has the deployment URL and the
    error), not from its terminal status change.
    """
    if isinstance(event, BuildStatusChanged):
        return "started" if event.state == BuildState.RUNNING else None
    if isinstance(event, BuildCompleted):
        return _COMPLETION_STAGES.get(event.state)
    return _DEPLOYMENT_STAGES.get(event.state)


def commit_status_state(event: StageEvent) -> BuildState | None:
    """The build state a commit status shows for this event, or None for no commit status."""
    if isinstance(event, BuildStatusChanged):
        return None if event.state.is_terminal else event.state
    if isinstance(event, BuildCompleted):
        return event.state
    return None
