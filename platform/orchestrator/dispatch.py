"""Turning accepted triggers into queued builds, sending a build's job to the builder the
scheduler chose, and keeping build records current.

Every step is idempotent on the build id, so a trigger seen twice (a redelivery, or the sweep
of pending triggers) never queues a build twice.
"""

from __future__ import annotations

import asyncio
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
from gobuild.platform.orchestrator.auto_cancel import cancel_superseded_builds
from gobuild.platform.orchestrator.dependents import trigger_dependents
from gobuild.platform.records import Build, BuildVariable, Project
from gobuild.platform.stores.build_queue import BuildQueue, Priority, queue_score
from gobuild.platform.stores.build_variables import BuildVariableStore
from gobuild.platform.stores.builds import BuildStore
from gobuild.platform.stores.projects import ProjectStore
from gobuild.platform.stores.resource_samples import ResourceSampleStore

log = logging.getLogger(__name__)


def effective_time_limit(settings: Settings, project: Project | None) -> int:
    """The build time limit: the instance's, or the project's own when that is lower."""
    own = project.build_timeout_seconds if project else None
    return min(settings.build_timeout_seconds, own) if own else settings.build_timeout_seconds


def build_priority(build: Build) -> Priority:
    """Production builds and redeploys go before previews."""
    return "high" if build.production or build.source == "redeploy" else "normal"


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
        timeout_seconds=effective_time_limit(settings, project),
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
        queue: BuildQueue | None = None,
    ) -> None:
        self.settings = settings
        self.builds = builds
        self.projects = projects
        self.producer = producer
        self.queue = queue or BuildQueue(projects.redis)
        # Set whenever the scheduler has something to do (a build queued or ended).
        self.wakeup = asyncio.Event()
        # The projects' build variables are kept beside the projects.
        self.variables = variables or BuildVariableStore(projects.redis)
        # The builds' resource samples, kept for the dashboard's chart of a finished build.
        self.resource_samples = resource_samples or ResourceSampleStore(projects.redis)

    async def handle_trigger(self, trigger: BuildTriggered) -> None:
        """Number the triggered build and queue it for the scheduler."""
        build = await self.builds.get(trigger.build_id)
        if build is None:
            log.warning("trigger for unknown build %s skipped", trigger.build_id)
            await self.builds.forget_trigger(trigger.build_id)
            return
        handled = build.state != BuildState.QUEUED and not await self.builds.is_pending(build.id)
        if handled or build.state not in (BuildState.QUEUED, BuildState.DISPATCHED):
            await self.builds.forget_trigger(build.id)  # queued before: a repeat
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
            # The number reaches everyone with the `dispatched` event.
            build = (
                await self.builds.update(build.id, number=await self.builds.next_number(project.id))
                or build
            )
        # A crash before the trigger is forgotten leaves it pending: the sweep handles it again,
        # and a build queued or given to a builder already is not queued twice.
        placed = await self.queue.is_queued(build.id) or await self.queue.assignment(build.id)
        if not placed:
            await self.before_enqueue(build, project)
            await self.enqueue(build)
            log.info("queued build %s (#%s of %s)", build.id, build.number, project.name)
        await self.builds.forget_trigger(build.id)
        self.wakeup.set()

    async def enqueue(self, build: Build) -> None:
        """Queue the build by its priority and the time it was triggered."""
        score = queue_score(
            build.created_at.timestamp(),
            build_priority(build),
            self.settings.queue_priority_boost_seconds,
        )
        await self.queue.enqueue(build.id, score, attempt=build.attempt + 1)

    async def before_enqueue(self, build: Build, project: Project) -> None:
        """Runs for a triggered build right before it is queued: a push cancels the older
        builds of its branch (auto-cancel); those that ended at once free their slots."""
        for ended in await cancel_superseded_builds(self.builds, self.producer, build, project):
            if ended.state.is_terminal:
                await self.release(ended.id)

    async def after_completion(self, build: Build) -> None:
        """Runs after a build's completion was applied to its record (twice for a completion
        delivered twice: idempotent): a successful production build builds its dependents."""
        await trigger_dependents(self.builds, self.projects, build, self.handle_trigger)

    async def start_job(
        self, build: Build, project: Project, builder_id: str, attempt: int
    ) -> Build:
        """Send the build's job to the builder the scheduler gave it to: the record goes
        `dispatched` (or, for a build under way, takes the attempt), then the job is published.

        Raises IllegalTransition when the build ended meanwhile, and KafkaError, TimeoutError or
        OSError when the broker does not take an event.
        """
        if build.state == BuildState.QUEUED:
            event = BuildStatusChanged(
                build_id=build.id,
                project_id=build.project_id,
                state=BuildState.DISPATCHED,
                number=build.number,
                attempt=attempt,
            )
            build = await self.builds.apply_status(event) or build
            # The job does not wait for the broker to take the status event: both go at once.
            await asyncio.gather(
                self.producer.publish(TOPIC_BUILD_STATUS, event),
                self.publish_request(build, project, builder_id=builder_id, attempt=attempt),
            )
            return build
        if build.state.is_terminal:
            raise IllegalTransition(build.state, BuildState.DISPATCHED)
        if build.attempt < attempt:
            build = await self.builds.update(build.id, attempt=attempt) or build
        await self.publish_request(build, project, builder_id=builder_id, attempt=attempt)
        return build

    async def publish_request(
        self, build: Build, project: Project, *, builder_id: str, attempt: int
    ) -> None:
        """Publish the build job for one builder (again, when the first was lost)."""
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
            builder_id=builder_id,
            attempt=attempt,
        )
        await self.producer.publish(TOPIC_BUILD_REQUESTS, request)

    async def handle_record(self, event: Event) -> None:
        """Keep the build record current from the builders' `build-status` and
        `build-completions` events (this service applied its own before publishing them)."""
        try:
            if isinstance(event, BuildStatusChanged):
                if event.builder_id is not None:
                    await self.builds.apply_status(event)
                if event.state.is_terminal:
                    await self.release_if_ended(event.build_id)
            elif isinstance(event, BuildCompleted):
                if event.builder_id is not None:
                    build = await self.builds.apply_completion(event)
                else:
                    build = await self.builds.get(event.build_id)
                await self.release_if_ended(event.build_id)
                if build is not None:
                    await self.after_completion(build)
            elif isinstance(event, BuildResourceSample):
                await self.resource_samples.append(event)
        except IllegalTransition as exc:
            log.warning(
                "ignored %s for build %s: %s", event.type, getattr(event, "build_id", "?"), exc
            )
            if isinstance(event, BuildStatusChanged | BuildCompleted):
                await self.release_if_ended(event.build_id)

    async def release_if_ended(self, build_id: str) -> None:
        """A build that ended (or is gone) leaves the queue and frees its builder's slot, and
        the scheduler runs a round at once."""
        build = await self.builds.get(build_id)
        if build is not None and not build.state.is_terminal:
            return
        await self.release(build_id)

    async def release(self, build_id: str) -> None:
        """Take an ended build out of the queue and its assignment; wake the scheduler."""
        await self.queue.unassign(build_id)
        await self.queue.remove(build_id)
        self.wakeup.set()

    async def sweep_pending(self) -> int:
        """Queue triggers that were recorded but never reached (or finished) this service."""
        pending = await self.builds.pending_triggers()
        for trigger in pending:
            await self.handle_trigger(trigger)
        return len(pending)

    async def end_unheld(self, build: Build, state: BuildState, reason: str) -> Build | None:
        """End a build no builder holds (`end_unheld_build`) and release its place."""
        ended = await end_unheld_build(self.builds, self.producer, build, state, reason)
        await self.release_if_ended(build.id)
        return ended

    async def _end_before_running(self, build: Build, state: BuildState, reason: str) -> None:
        await self.end_unheld(build, state, reason)
        await self.builds.forget_trigger(build.id)
