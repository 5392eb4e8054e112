"""From a stage event to the deliveries it makes: the commit status, the project's hooks that
subscribed to the stage, the members who opted in to it by e-mail.

Each receiver gets each stage of a build once (a marker per build, stage and receiver, written
with the delivery), so repeated or rapid status changes and redelivered events make no second
message. Webhooks and e-mails wait a short coalescing window, during which other builds that
reach the same stage join the same message. An event is handled once (a marker by event id).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import redis.asyncio as aioredis

from gobuild.platform.auth.users import UserStore
from gobuild.platform.build_state import BuildState
from gobuild.platform.events import (
    BuildCompleted,
    BuildStatusChanged,
    DeploymentStatusChanged,
    Event,
)
from gobuild.platform.notification_records import (
    BuildSummary,
    Delivery,
    NotificationStage,
    ReceiverKind,
)
from gobuild.platform.notifications.forge_status import Forge, forge_state, state_rank
from gobuild.platform.notifications.stages import (
    StageEvent,
    commit_status_state,
    notification_stage,
)
from gobuild.platform.records import Project
from gobuild.platform.stores.build_notes import BuildNotes
from gobuild.platform.stores.builds import BuildStore
from gobuild.platform.stores.deliveries import DeliveryQueue, new_delivery_id
from gobuild.platform.stores.hooks import HookStore
from gobuild.platform.stores.keys import (
    key_notification_batch,
    key_notification_sent,
    key_notified_event,
)
from gobuild.platform.stores.notification_preferences import PreferenceStore
from gobuild.platform.stores.projects import ProjectStore

log = logging.getLogger(__name__)

# How long a handled event id is remembered (a redelivery later than that is handled again,
# and finds the per-receiver markers).
EVENT_MARKER_TTL_SECONDS = 24 * 3600


class Fanout:
    """Turns stage events into queued deliveries."""

    def __init__(
        self,
        redis: aioredis.Redis,
        *,
        queue: DeliveryQueue,
        notes: BuildNotes,
        projects: ProjectStore,
        builds: BuildStore,
        hooks: HookStore,
        users: UserStore,
        preferences: PreferenceStore,
        email_enabled: bool,
        coalesce_seconds: float,
        queued: Callable[[], None],
    ) -> None:
        self.redis = redis
        self.queue = queue
        self.notes = notes
        self.projects = projects
        self.builds = builds
        self.hooks = hooks
        self.users = users
        self.preferences = preferences
        self.email_enabled = email_enabled
        self.coalesce_seconds = coalesce_seconds
        self._queued = queued

    async def handle(self, event: Event) -> None:
        """Queue what `event` calls for; other events (and repeated ones) are ignored."""
        if not isinstance(event, StageEvent):
            return
        marker = key_notified_event(event.event_id)
        if await self.redis.exists(marker):
            return
        if isinstance(event, BuildStatusChanged):
            await self.notes.remember(
                event.build_id,
                step=event.step if event.step else None,
                commit_sha=event.commit_sha,
                number=event.number,
            )
        project = await self.projects.get(event.project_id)
        if project is not None:
            queued = await self._fan_out(event, project)
            if queued:
                self._queued()
        await self.redis.set(marker, "1", ex=EVENT_MARKER_TTL_SECONDS)

    async def _fan_out(self, event: StageEvent, project: Project) -> int:
        stage = notification_stage(event)
        state = commit_status_state(event)
        if stage is None and state is None:
            return 0
        summary = await self._summary(event)
        queued = 0
        if state is not None:
            queued += await self._commit_status(project, summary, state)
        if stage is not None:
            queued += await self._hooks(project, summary, stage)
            queued += await self._emails(project, summary, stage)
        return queued

    async def _summary(self, event: StageEvent) -> BuildSummary:
        """The build as this event tells it, completed from what is known of it."""
        notes = await self.notes.get(event.build_id)
        build = await self.builds.get(event.build_id)
        number = build.number if build else None
        if number is None and notes.get("number"):
            number = int(notes["number"])
        commit_sha = getattr(event, "commit_sha", None) or notes.get("commit_sha")
        deployment_url = None
        error = None
        if isinstance(event, BuildCompleted):
            deployment_url, error = event.deployment_url, event.error
        elif isinstance(event, DeploymentStatusChanged):
            deployment_url = event.alias_url if event.state == "promoted" else event.url
            deployment_url = deployment_url or event.url
        elif isinstance(event, BuildStatusChanged):
            error = event.reason
        return BuildSummary(
            build_id=event.build_id,
            state=event.state,
            number=number,
            branch=build.branch if build else None,
            commit_sha=commit_sha or (build.commit_sha if build else None),
            commit_message=build.commit_message if build else None,
            # A completion names the step it ended at: it may come before that step's status.
            step=getattr(event, "step", None)
            or notes.get("step")
            or (build.step if build else None),
            error=error,
            deployment_url=deployment_url,
        )

    async def _commit_status(
        self, project: Project, summary: BuildSummary, state: BuildState
    ) -> int:
        if project.provider not in ("github", "gitlab") or project.forge_token is None:
            return 0
        if summary.commit_sha is None:
            return 0  # sent with a later state, once the commit is known
        forge: Forge = "github" if project.provider == "github" else "gitlab"
        status = forge_state(forge, state)
        delivery = Delivery(
            id=new_delivery_id(),
            project_id=project.id,
            kind=forge,
            receiver=forge,
            stage=status,
            builds=[summary],
            ordering_key=f"{summary.build_id}:{forge}",
            rank=state_rank(status),
        )
        marker = key_notification_sent(summary.build_id, f"status-{status}", forge)
        return 1 if await self.queue.enqueue(delivery, sent_marker=marker) else 0

    async def _hooks(
        self, project: Project, summary: BuildSummary, stage: NotificationStage
    ) -> int:
        queued = 0
        for hook in await self.hooks.list(project.id):
            if stage in hook.events:
                queued += await self._enqueue_message(project, summary, stage, "hook", hook.id)
        return queued

    async def _emails(
        self, project: Project, summary: BuildSummary, stage: NotificationStage
    ) -> int:
        if not self.email_enabled:
            return 0
        members = list(await self.users.members(project.id))
        preferences = await self.preferences.get_many(members)
        queued = 0
        for username, wanted in preferences.items():
            if not wanted.wants(stage, project.id):
                continue
            user = await self.users.get(username)
            if user is None or not user.email or not user.email_verified:
                continue
            queued += await self._enqueue_message(project, summary, stage, "email", username)
        return queued

    async def _enqueue_message(
        self,
        project: Project,
        summary: BuildSummary,
        stage: NotificationStage,
        kind: ReceiverKind,
        receiver: str,
    ) -> int:
        delivery = Delivery(
            id=new_delivery_id(),
            project_id=project.id,
            kind=kind,
            receiver=receiver,
            stage=stage,
            builds=[summary],
        )
        queued = await self.queue.enqueue(
            delivery,
            sent_marker=key_notification_sent(summary.build_id, stage, f"{kind}:{receiver}"),
            batch_key=key_notification_batch(project.id, f"{kind}:{receiver}", stage),
            delay=self.coalesce_seconds,
        )
        return 1 if queued is not None else 0
