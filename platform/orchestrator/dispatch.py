"""Turning accepted triggers into build jobs, and keeping build records current.

Every step is idempotent on the build id, so a trigger seen twice (a redelivery, or the sweep
of pending triggers) never dispatches a build twice.
"""

from __future__ import annotations

import logging

from gobuild.platform.build_endings import end_unheld_build
from gobuild.platform.build_state import BuildState, IllegalTransition
from gobuild.platform.bus import EventProducer
from gobuild.platform.config import Settings
from gobuild.platform.events import (
    TOPIC_BUILD_REQUESTS,
    TOPIC_BUILD_STATUS,
    BuildCompleted,
    BuildConfig,
    BuildRequested,
    BuildResourceSample,
    BuildStatusChanged,
    BuildTriggered,
    Event,
)
from gobuild.platform.records import Build, BuildVariable, Project
from gobuild.platform.stores.build_variables import BuildVariableStore
from gobuild.platform.stores.builds import BuildStore
from gobuild.platform.stores.projects import ProjectStore
from gobuild.platform.stores.resource_samples import ResourceSampleStore

log = logging.getLogger(__name__)


def resolve_config(
    settings: Settings, project: Project, variables: list[BuildVariable]
) -> BuildConfig:
    """The limits and defaults a build runs with, the project's build settings and the
    variables of the build's target; the repository's gobuild.toml refines them. Secret values
    stay encrypted: only a builder decrypts them."""
    return BuildConfig(
        image=project.image or settings.build_image,
        install=project.install_command,
        build=project.build_command,
        output=project.output_dir,
        root_dir=project.root_dir,
        env={v.name: v.value for v in variables if not v.secret},
        secret_env={v.name: v.value for v in variables if v.secret},
        timeout_seconds=settings.build_timeout_seconds,
        memory_mb=settings.build_memory_mb,
        cpus=settings.build_cpus,
        pids_limit=settings.build_pids_limit,
    )


class Dispatcher:
    """The orchestrator's logic, independent of how events reach it."""

    def __init__(
        self,
        settings: Settings,
        builds: BuildStore,
        projects: ProjectStore,
        producer: EventProducer,
        variables: BuildVariableStore | None = None,
        resource_samples: ResourceSampleStore | None = None,
    ) -> None:
        self.settings = settings
        self.builds = builds
        self.projects = projects
        self.producer = producer
        # The projects' build variables are kept beside the projects.
        self.variables = variables or BuildVariableStore(projects.redis)
        # The builds' resource samples, kept for the dashboard's chart of a finished build.
        self.resource_samples = resource_samples or ResourceSampleStore(projects.redis)

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
            # The number reaches everyone with the `dispatched` event below.
            build = (
                await self.builds.update(build.id, number=await self.builds.next_number(project.id))
                or build
            )
        if build.state == BuildState.QUEUED:
            try:
                build = await self._transition(build, BuildState.DISPATCHED)
            except IllegalTransition:
                # It ended meanwhile (a cancel the gateway applied): nothing to dispatch.
                await self.builds.forget_trigger(build.id)
                return
        # A crash before the request is out leaves the trigger pending: the sweep dispatches it
        # again and builders drop a request for a build that is already claimed or finished.
        await self.publish_request(build, project)
        await self.builds.forget_trigger(build.id)
        log.info("dispatched build %s (#%s of %s)", build.id, build.number, project.name)

    async def publish_request(self, build: Build, project: Project) -> None:
        """Publish the build job for the builders' group (again, when the first was lost)."""
        target = "production" if build.production else "preview"
        variables = await self.variables.for_target(project.id, target)
        request = BuildRequested(
            build_id=build.id,
            project_id=project.id,
            project_name=project.name,
            number=build.number or 0,
            source=build.source,
            repo_url=project.repo_url,
            ref=build.ref,
            branch=build.branch,
            commit_sha=build.commit_sha,
            production=build.production,
            config=resolve_config(self.settings, project, variables),
            repo_credentials=project.repo_credentials,
            trusted_source=project.trusted_source,
        )
        await self.producer.publish(TOPIC_BUILD_REQUESTS, request)

    async def handle_record(self, event: Event) -> None:
        """Keep the build record current from the builders' `build-status` and
        `build-completions` events (this service applied its own before publishing them)."""
        try:
            if isinstance(event, BuildStatusChanged) and event.builder_id is not None:
                await self.builds.apply_status(event)
            elif isinstance(event, BuildCompleted) and event.builder_id is not None:
                await self.builds.apply_completion(event)
            elif isinstance(event, BuildResourceSample):
                await self.resource_samples.append(event)
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

    async def _end_before_running(self, build: Build, state: BuildState, reason: str) -> None:
        await end_unheld_build(self.builds, self.producer, build, state, reason)
        await self.builds.forget_trigger(build.id)
