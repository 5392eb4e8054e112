"""Running one build job: skip it, wait for another builder's claim, or claim it and run it
through the pipeline to its terminal state, leaving no container or file behind.

A job runs only while the scheduler's assignment gives its build to this builder: a copy sent
again, or one for a build the scheduler has since given to another builder, is skipped."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil

import docker

from gobuild.builder_agent.build_run import BuildRun, Outcome
from gobuild.builder_agent.container import remove_build_containers
from gobuild.builder_agent.delivery import ResultDelivery
from gobuild.builder_agent.log_stream import LogStreamer
from gobuild.builder_agent.pipeline import BuildPipeline
from gobuild.builder_agent.reporter import BuildReporter
from gobuild.platform.build_state import BuildState
from gobuild.platform.bus import EventProducer
from gobuild.platform.config import Settings
from gobuild.platform.events import BuildRequested
from gobuild.platform.records import Build
from gobuild.platform.stores.build_queue import BuildQueue
from gobuild.platform.stores.builds import BuildStore
from gobuild.platform.stores.claims import BuildClaims
from gobuild.platform.waiting import wait_within

log = logging.getLogger(__name__)

# How often a job whose build another builder holds checks whether that builder is gone.
CLAIM_WAIT_SECONDS = 3.0
_CLEANUP_SECONDS = 30.0


class BuildRunner:
    """Takes a build job to its end on this builder; `running` holds the builds in progress."""

    def __init__(
        self,
        settings: Settings,
        builder_id: str,
        *,
        producer: EventProducer,
        builds: BuildStore,
        claims: BuildClaims,
        docker_client: docker.DockerClient,
        pipeline: BuildPipeline,
        reporter: BuildReporter,
        delivery: ResultDelivery,
        queue: BuildQueue | None = None,
    ) -> None:
        self.settings = settings
        self.builder_id = builder_id
        self.producer = producer
        self.builds = builds
        self.claims = claims
        self.docker = docker_client
        self.pipeline = pipeline
        self.reporter = reporter
        self.delivery = delivery
        self.queue = queue or BuildQueue(builds.redis)
        self.running: dict[str, BuildRun] = {}

    async def handle_request(self, request: BuildRequested) -> None:
        """Run the requested build unless it is unknown, finished, no longer given to this
        builder, run by another builder, or its result waits in the outbox (a request sent
        again never runs a build twice)."""
        build = await self.builds.get(request.build_id)
        if build is None:
            log.warning("build %s: no such build; skipping the job", request.build_id)
            return
        if build.state.is_terminal:
            log.info("build %s: already %s; skipping the job", build.id, build.state.value)
            return
        if not await self._given_here(request.build_id):
            return
        while not await self.claims.claim(request.build_id):
            # Another builder holds it (one the scheduler took it from, that may have just
            # died: its heartbeat outlives it by up to HEARTBEAT_TTL_SECONDS), so the job is
            # kept until the build ends, goes elsewhere, or the holder is gone and the claim
            # is taken.
            log.info("build %s: held by another builder; waiting", build.id)
            await asyncio.sleep(CLAIM_WAIT_SECONDS)
            build = await self.builds.get(request.build_id)
            if build is None or build.state.is_terminal:
                return
            if not await self._given_here(request.build_id):
                return
        try:
            # Under the claim: an attempt that ended just now has its result in the outbox (or
            # applied) before it gave the claim up.
            build = await self.builds.get(request.build_id)
            if build is None or build.state.is_terminal:
                return
            if await self.delivery.is_pending(build.id):
                log.info("build %s: its result waits for delivery; skipping the job", build.id)
                return
            attempt = await self.claims.next_attempt(build.id, at_least=request.attempt)
            await self._run_build(request, build, attempt)
        finally:
            with contextlib.suppress(Exception):
                await wait_within(self.claims.release(build.id), 5)

    async def _given_here(self, build_id: str) -> bool:
        """Whether the scheduler's assignment of the build names this builder."""
        assignment = await self.queue.assignment(build_id)
        if assignment is not None and assignment.builder_id == self.builder_id:
            return True
        log.info("build %s: not given to this builder (any more); skipping the job", build_id)
        return False

    def cancel(self, build_id: str) -> bool:
        """Cancel a build if it runs here; True if it did."""
        run = self.running.get(build_id)
        if run is None:
            return False
        log.info("build %s: cancel requested", build_id)
        run.cancel.set()
        return True

    async def _run_build(self, request: BuildRequested, build: Build, attempt: int) -> None:
        settings = self.settings
        logs = LogStreamer(
            self.producer,
            settings,
            build_id=request.build_id,
            project_id=request.project_id,
            attempt=attempt,
        )
        await logs.start()
        now = asyncio.get_running_loop().time()
        name = f"{request.build_id}-{attempt}"
        run = BuildRun(
            request=request,
            attempt=attempt,
            logs=logs,
            workspace=settings.workspaces_dir / name,
            archive=settings.workspaces_dir / f"{name}.tar.gz",
            started=now,
            deadline=now + request.config.timeout_seconds,
            timeout_seconds=request.config.timeout_seconds,
            commit_sha=request.commit_sha,
        )
        self.running[run.build_id] = run
        finished = False
        try:
            if await self.builds.cancel_requested(run.build_id):
                outcome = Outcome(BuildState.CANCELLED, "cancelled before it started")
            else:
                if build.state == BuildState.RUNNING or attempt > 1:
                    await logs.system(f"Resuming after builder loss (attempt {attempt})")
                    await self._remove_leftovers(run)
                # The pipeline's first event (running, at checkout) is the build's start.
                outcome = await self.pipeline.execute(run)
            await self._finish(run, outcome)
            finished = True
        finally:
            self.running.pop(run.build_id, None)
            if not finished:
                await self._clean_up(run)
                # The builder is stopping (or broke) mid-build: this attempt's log ends here.
                with contextlib.suppress(Exception):
                    await wait_within(self._abandon(run), 10)
                await logs.abort()

    async def _remove_leftovers(self, run: BuildRun) -> None:
        """A lost builder's containers and workspaces of this build go before it runs again."""
        await remove_build_containers(self.docker, run.build_id)
        for stale in self.settings.workspaces_dir.glob(f"{run.build_id}-*"):
            if stale != run.workspace and stale != run.archive:
                if stale.is_dir():
                    await asyncio.to_thread(shutil.rmtree, stale, ignore_errors=True)
                else:
                    stale.unlink(missing_ok=True)

    async def _abandon(self, run: BuildRun) -> None:
        await run.logs.close(
            timeout=5, last_line="Builder stopped; the build will run again on another builder"
        )

    async def _clean_up(self, run: BuildRun) -> None:
        """Remove the build's containers, workspace and archive, even while being cancelled."""

        async def clean() -> None:
            with contextlib.suppress(Exception):
                await remove_build_containers(self.docker, run.build_id, self.builder_id)
            if run.warm is None:  # a warm container's folder is emptied when it is given back
                await asyncio.to_thread(shutil.rmtree, run.workspace, ignore_errors=True)
            with contextlib.suppress(FileNotFoundError):
                await asyncio.to_thread(run.archive.unlink)

        cleaning = asyncio.ensure_future(clean())
        try:
            await wait_within(asyncio.shield(cleaning), _CLEANUP_SECONDS)
        except TimeoutError:
            log.warning("build %s: clean-up is taking longer than expected", run.build_id)

    async def _finish(self, run: BuildRun, outcome: Outcome) -> None:
        """Clean up, last log line and final chunk, the progress events sent; then the result
        (completion and terminal status) through the outbox."""
        duration = run.elapsed()
        if outcome.state == BuildState.SUCCEEDED:
            last_line = f"Build succeeded in {duration:.1f}s"
        elif outcome.state == BuildState.CANCELLED:
            last_line = f"Build cancelled after {duration:.1f}s"
        elif outcome.state == BuildState.TIMED_OUT:
            last_line = f"Build {outcome.reason}"
        else:
            last_line = f"Build failed: {outcome.reason}"
        # Containers and files go before the result is told (a finished build holds nothing),
        # and so do the log's last chunk and the build's progress events.
        await asyncio.gather(
            self._clean_up(run),
            run.logs.close(last_line=last_line),
            self.reporter.flush(run.build_id),
        )
        log.info("build %s: %s", run.build_id, last_line)
        await self.delivery.deliver(self.reporter.result(run, outcome, duration))
