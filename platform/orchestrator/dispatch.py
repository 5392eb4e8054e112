"""Turning accepted triggers into build jobs, and keeping build records current.

Every step is idempotent on the build id, so a trigger seen twice (a redelivery, or the sweep
of pending triggers) never dispatches a build twice.
"""

from __future__ import annotations

import hashlib
import logging

from gobuild.platform.build_state import BuildState, IllegalTransition
from gobuild.platform.bus import EventProducer
from gobuild.platform.config import Settings
from gobuild.platform.events import (
    TOPIC_BUILD_COMPLETIONS,
    TOPIC_BUILD_REQUESTS,
    TOPIC_BUILD_STATUS,
    BuildCompleted,
    BuildConfig,
    BuildRequested,
    BuildStatusChanged,
    BuildTriggered,
    Event,
)
from gobuild.platform.records import Build, Project
from gobuild.platform.state import BuildStore, ProjectStore

log = logging.getLogger(__name__)


def resolve_config(settings: Settings, project: Project) -> BuildConfig:
    """The limits and defaults a build runs with; the repository's gobuild.toml refines them."""
    return BuildConfig(
        image=settings.build_image,
        timeout_seconds=settings.build_timeout_seconds,
        memory_mb=settings.build_memory_mb,
        cpus=settings.build_cpus,
        pids_limit=settings.build_pids_limit,
    )


def cache_key(project: Project, build: Build) -> str:
    """Builds of one project and branch share dependency caches."""
    scope = f"{project.id}:{build.branch or build.tag or 'detached'}"
    return hashlib.sha256(scope.encode()).hexdigest()[:32]


class Dispatcher:
    """The orchestrator's logic, independent of how events reach it."""

    def __init__(
        self,
        settings: Settings,
        builds: BuildStore,
        projects: ProjectStore,
        producer: EventProducer,
    ) -> None:
        self.settings = settings
        self.builds = builds
        self.projects = projects
        self.producer = producer

    async def handle_trigger(self, trigger: BuildTriggered) -> None:
        build = await self.builds.get(trigger.build_id)
        if build is None:
            log.warning("trigger for unknown build %s skipped", trigger.build_id)
            await self.builds.forget_trigger(trigger.build_id)
            return
        handled = build.state != BuildState.QUEUED and not await self.builds.is_pending(build.id)
        if handled or build.state not in (BuildState.QUEUED, BuildState.DISPATCHED):
            await self.builds.forget_trigger(build.id)  # dispatched before: a repeat
            return
        project = await self.projects.get(build.project_id)
        if project is None:
            await self._end_before_running(build, BuildState.FAILED, "the project no longer exists")
            return
        if await self.builds.cancel_requested(build.id):
            await self._end_before_running(
                build, BuildState.CANCELLED, "cancelled before it started"
            )
            return
        if build.number is None:
            build = (
                await self.builds.update(build.id, number=await self.builds.next_number(project.id))
                or build
            )
            await self._publish_status(build, BuildState.QUEUED)
        if build.state == BuildState.QUEUED:
            build = await self._transition(build, BuildState.DISPATCHED)
        request = BuildRequested(
            build_id=build.id,
            project_id=project.id,
            project_name=project.name,
            number=build.number or 0,
            repo_url=project.repo_url,
            ref=build.ref,
            branch=build.branch,
            commit_sha=build.commit_sha,
            production=build.production,
            config=resolve_config(self.settings, project),
            cache_key=cache_key(project, build),
        )
        # A crash before this line leaves the trigger pending: the sweep dispatches it again and
        # builders drop a request for a build that is already claimed or finished.
        await self.producer.publish(TOPIC_BUILD_REQUESTS, request)
        await self.builds.forget_trigger(build.id)
        log.info("dispatched build %s (#%s of %s)", build.id, build.number, project.name)

    async def handle_record(self, event: Event) -> None:
        """Keep the build record current from `build-status` and `build-completions`."""
        try:
            if isinstance(event, BuildStatusChanged):
                await self.builds.apply_status(event)
            elif isinstance(event, BuildCompleted):
                await self.builds.apply_completion(event)
        except IllegalTransition as exc:
            log.warning(
                "ignored %s for build %s: %s", event.type, getattr(event, "build_id", "?"), exc
            )

    async def sweep_pending(self) -> int:
        """Dispatch triggers that were recorded but never reached (or finished) this service."""
        pending = await self.builds.pending_triggers()
        for trigger in pending:
            await self.handle_trigger(trigger)
        return len(pending)

    async def _transition(
        self, build: Build, target: BuildState, reason: str | None = None
    ) -> Build:
        event = BuildStatusChanged(
            build_id=build.id,
            project_id=build.project_id,
            state=target,
            number=build.number,
            reason=reason,
        )
        updated = await self.builds.apply_status(event)
        await self.producer.publish(TOPIC_BUILD_STATUS, event)
        return updated or build

    async def _publish_status(self, build: Build, state: BuildState) -> None:
        await self.producer.publish(
            TOPIC_BUILD_STATUS,
            BuildStatusChanged(
                build_id=build.id, project_id=build.project_id, state=state, number=build.number
            ),
        )

    async def _end_before_running(self, build: Build, state: BuildState, reason: str) -> None:
        build = await self._transition(build, state, reason)
        await self.producer.publish(
            TOPIC_BUILD_COMPLETIONS,
            BuildCompleted(
                build_id=build.id,
                project_id=build.project_id,
                state=state,
                duration_seconds=0.0,
                error=reason,
            ),
        )
        await self.builds.forget_trigger(build.id)
        log.info("build %s ended %s: %s", build.id, state.value, reason)
