"""The builder agent: takes build jobs from `build-requests` and runs them to a deployment.

Each worker owns one consumer in the `builders` group and commits a job's offset only after the
build finished, so a builder that dies leaves its job to be delivered again. A Redis claim keeps
two builders from running the same build; a heartbeat tells others (and the orchestrator) which
builds this builder runs. Cancel requests arrive on a Redis channel.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import socket
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import docker
import httpx
import redis.asyncio as aioredis
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.errors import CommitFailedError, KafkaError

from gobuild.builder_agent.artifacts import ArtifactError, StorageClient, find_output, pack_output
from gobuild.builder_agent.checkout import CheckoutError, checkout, redact_url
from gobuild.builder_agent.container import (
    LABEL_BUILD_ID,
    LABEL_BUILDER_ID,
    LABEL_STEP,
    ContainerError,
    StepSpec,
    ensure_image,
    hand_workspace_to,
    remove_build_containers,
    run_step,
)
from gobuild.builder_agent.log_stream import LogStreamer
from gobuild.builder_agent.repo_config import BuildPlan, RepoConfigError, resolve_plan
from gobuild.platform.build_state import BuildState
from gobuild.platform.bus import EventProducer, decode_record, make_consumer, wait_for_topics
from gobuild.platform.config import Settings
from gobuild.platform.events import (
    TOPIC_BUILD_COMPLETIONS,
    TOPIC_BUILD_REQUESTS,
    TOPIC_BUILD_STATUS,
    TOPIC_DEPLOYMENT_STATUS,
    ArtifactRef,
    BuildCompleted,
    BuildRequested,
    BuildStatusChanged,
    DeploymentStatusChanged,
    Event,
    utcnow,
)
from gobuild.platform.records import Build, Deployment, new_deployment_id
from gobuild.platform.state import (
    CHANNEL_CANCEL,
    BuildStore,
    DeploymentStore,
    connect_redis,
    key_build,
    key_build_claim,
    key_builder_heartbeat,
)

log = logging.getLogger(__name__)

T = TypeVar("T")

CONSUMER_GROUP = "builders"
HEARTBEAT_TTL_SECONDS = 15
HEARTBEAT_INTERVAL_SECONDS = 5.0
CLAIM_TTL_SECONDS = 30
# Claims are refreshed with the heartbeat, well inside their lifetime.
CLAIM_REFRESH_SECONDS = 10.0
# How often a job whose build another builder holds checks whether that builder is gone.
CLAIM_WAIT_SECONDS = 3.0
# Time allowed, after the build's own limit, for the consumer to come back to the broker.
POLL_GRACE_SECONDS = 120
# How often a job is retried when the builder itself fails around it (Redis, broker down).
_JOB_ATTEMPTS = 5
_CLEANUP_SECONDS = 30.0

# Compare-and-act on a claim: only the holder may refresh or release it.
_REFRESH_CLAIM = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('EXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
_RELEASE_CLAIM = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""
_TAKE_OVER_CLAIM = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])
  return 1
end
return 0
"""


def default_builder_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


def key_build_attempts(build_id: str) -> str:
    return key_build(build_id) + ":attempts"


class BuildStopped(Exception):
    """The build ends early with `state` (failed, timed out, cancelled) for `reason`."""

    def __init__(self, state: BuildState, reason: str) -> None:
        super().__init__(reason)
        self.state = state
        self.reason = reason


@dataclass
class Outcome:
    state: BuildState
    reason: str | None = None
    artifact: ArtifactRef | None = None
    deployment_id: str | None = None
    deployment_url: str | None = None


@dataclass
class BuildRun:
    """One attempt of one build on this builder."""

    request: BuildRequested
    attempt: int
    logs: LogStreamer
    workspace: Path
    archive: Path
    started: float
    deadline: float
    timeout_seconds: int
    cancel: asyncio.Event = field(default_factory=asyncio.Event)
    commit_sha: str | None = None

    @property
    def build_id(self) -> str:
        return self.request.build_id


class Agent:
    """A builder: `await Agent(settings).run()` until `request_stop()`."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.builder_id = settings.builder_id or default_builder_id()
        self.started_at = utcnow()
        self._producer: EventProducer | None = None
        self._redis: aioredis.Redis | None = None
        self._http: httpx.AsyncClient | None = None
        self._docker: docker.DockerClient | None = None
        self._running: dict[str, BuildRun] = {}
        self._stop_requested = asyncio.Event()

    # Lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        """Connect to the broker, Redis, storage (HTTP client) and the Docker engine."""
        settings = self.settings
        await wait_for_topics(settings)
        self._producer = EventProducer(settings, client_id=f"builder-{self.builder_id}")
        await self._producer.start()
        self._redis = connect_redis(settings.redis_url)
        await asyncio.wait_for(self._redis.ping(), 10)
        self._http = httpx.AsyncClient(timeout=httpx.Timeout(30.0, connect=5.0))
        self._docker = await asyncio.to_thread(docker.from_env, timeout=60)
        await asyncio.wait_for(asyncio.to_thread(self._docker.ping), 30)
        await asyncio.to_thread(settings.workspaces_dir.mkdir, parents=True, exist_ok=True)
        log.info("builder %s started (capacity %d)", self.builder_id, settings.builder_concurrency)

    async def stop(self) -> None:
        """Close every connection start() opened."""
        if self._redis is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(
                    self._redis.delete(key_builder_heartbeat(self.builder_id)), 5
                )
            await self._redis.aclose()
            self._redis = None
        if self._http is not None:
            await self._http.aclose()
            self._http = None
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None
        if self._docker is not None:
            await asyncio.to_thread(self._docker.close)
            self._docker = None
        log.info("builder %s stopped", self.builder_id)

    def request_stop(self) -> None:
        """Stop taking jobs; running builds are abandoned uncommitted for another builder."""
        self._stop_requested.set()

    async def run(self) -> None:
        try:
            await self.start()
            await self.serve()
        finally:
            await self.stop()

    async def serve(self) -> None:
        """Run the workers, the heartbeat and the cancel listener until `request_stop()`."""
        tasks = [
            asyncio.create_task(self._heartbeat_loop(), name="heartbeat"),
            asyncio.create_task(self._cancel_listener(), name="cancel-listener"),
        ]
        tasks += [
            asyncio.create_task(self._worker(index), name=f"worker-{index}")
            for index in range(self.settings.builder_concurrency)
        ]
        try:
            await self._stop_requested.wait()
        finally:
            for task in tasks:
                task.cancel()
            results = await asyncio.gather(*tasks, return_exceptions=True)
            for task, result in zip(tasks, results, strict=True):
                if isinstance(result, Exception):
                    log.error("%s ended with %r", task.get_name(), result)

    @property
    def running_builds(self) -> list[str]:
        return sorted(self._running)

    # Connections ---------------------------------------------------------------------------

    @staticmethod
    def _started(connection: T | None) -> T:
        if connection is None:
            raise RuntimeError("the agent is not started")
        return connection

    @property
    def redis(self) -> aioredis.Redis:
        return self._started(self._redis)

    @property
    def producer(self) -> EventProducer:
        return self._started(self._producer)

    @property
    def docker(self) -> docker.DockerClient:
        return self._started(self._docker)

    @property
    def storage(self) -> StorageClient:
        return StorageClient(self._started(self._http), self.settings)

    # Background loops ----------------------------------------------------------------------

    async def _heartbeat_loop(self) -> None:
        last_claim_refresh = 0.0
        while True:
            try:
                await self._beat()
                now = time.monotonic()
                if now - last_claim_refresh >= CLAIM_REFRESH_SECONDS:
                    await self._refresh_claims()
                    last_claim_refresh = now
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("heartbeat failed: %s", exc)
            await asyncio.sleep(HEARTBEAT_INTERVAL_SECONDS)

    async def _beat(self) -> None:
        payload = {
            "id": self.builder_id,
            "running": self.running_builds,
            "capacity": self.settings.builder_concurrency,
            "started_at": self.started_at.isoformat(),
        }
        await self.redis.set(
            key_builder_heartbeat(self.builder_id), json.dumps(payload), ex=HEARTBEAT_TTL_SECONDS
        )

    async def _refresh_claims(self) -> None:
        store = BuildStore(self.redis)
        for build_id, run in list(self._running.items()):
            await self.redis.eval(  # type: ignore[misc]
                _REFRESH_CLAIM, 1, key_build_claim(build_id), self.builder_id, CLAIM_TTL_SECONDS
            )
            # A cancel published while the channel was not subscribed is not lost.
            if await store.cancel_requested(build_id):
                run.cancel.set()

    async def _cancel_listener(self) -> None:
        delay = 0.5
        while True:
            try:
                pubsub = self.redis.pubsub()
                try:
                    await pubsub.subscribe(CHANNEL_CANCEL)
                    delay = 0.5
                    while True:
                        message = await pubsub.get_message(
                            ignore_subscribe_messages=True, timeout=1.0
                        )
                        if message and message.get("type") == "message":
                            self.cancel_build(str(message["data"]))
                finally:
                    await pubsub.aclose()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("cancel channel failed (%s); resubscribing in %.1fs", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)

    def cancel_build(self, build_id: str) -> bool:
        """Cancel a build if it runs here; True if it did."""
        run = self._running.get(build_id)
        if run is None:
            return False
        log.info("build %s: cancel requested", build_id)
        run.cancel.set()
        return True

    # Consuming jobs ------------------------------------------------------------------------

    def _make_consumer(self, index: int) -> AIOKafkaConsumer:
        return make_consumer(
            self.settings,
            [TOPIC_BUILD_REQUESTS],
            CONSUMER_GROUP,
            client_id=f"builder-{self.builder_id}-{index}",
            auto_commit=False,
            max_poll_interval_ms=(self.settings.build_timeout_seconds + POLL_GRACE_SECONDS) * 1000,
        )

    async def _worker(self, index: int) -> None:
        delay = 0.5
        while True:
            consumer = self._make_consumer(index)
            try:
                await consumer.start()
                delay = 0.5
                while True:
                    record = await consumer.getone()
                    await self._handle_record(record)
                    await self._commit(consumer, record)
            except asyncio.CancelledError:
                raise
            except KafkaError as exc:
                log.warning("worker %d: broker error (%s); retrying in %.1fs", index, exc, delay)
            finally:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(consumer.stop(), 10)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10.0)

    async def _commit(self, consumer: AIOKafkaConsumer, record: ConsumerRecord) -> None:
        partition = TopicPartition(record.topic, record.partition)
        try:
            await consumer.commit({partition: record.offset + 1})
        except CommitFailedError as exc:
            # The partition moved to another consumer; it gets the job again, and the claim or
            # the build's terminal state tells it what to do.
            log.warning("could not commit %s@%d: %s", partition, record.offset, exc)

    async def _handle_record(self, record: ConsumerRecord) -> None:
        event = decode_record(record)
        if not isinstance(event, BuildRequested):
            if event is not None:
                log.warning("ignoring %s event on %s", event.type, record.topic)
            return
        for attempt in range(1, _JOB_ATTEMPTS + 1):
            try:
                await self.handle_request(event)
                return
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception(
                    "build %s: handling the job failed (try %d of %d)",
                    event.build_id,
                    attempt,
                    _JOB_ATTEMPTS,
                )
                await asyncio.sleep(min(2.0**attempt, 30.0))
        log.error("build %s: giving up on the job", event.build_id)

    # One build -----------------------------------------------------------------------------

    async def handle_request(self, request: BuildRequested) -> None:
        """Run the requested build unless it is unknown, finished or run by another builder."""
        build = await BuildStore(self.redis).get(request.build_id)
        if build is None:
            log.warning("build %s: no such build; skipping the job", request.build_id)
            return
        if build.state.is_terminal:
            log.info("build %s: already %s; skipping the job", build.id, build.state.value)
            return
        while not await self._claim(request.build_id):
            # Another builder holds it. Committing now would lose the build if that builder
            # has just died (its heartbeat outlives it by up to HEARTBEAT_TTL_SECONDS), so the
            # job is kept until the build ends or the holder is gone and the claim is taken.
            log.info("build %s: held by another builder; waiting", build.id)
            await asyncio.sleep(CLAIM_WAIT_SECONDS)
            build = await BuildStore(self.redis).get(request.build_id)
            if build is None or build.state.is_terminal:
                return
        try:
            attempt = int(await self.redis.incr(key_build_attempts(build.id)))
            await self._run_build(request, build, attempt)
        finally:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(
                    self.redis.eval(  # type: ignore[misc]
                        _RELEASE_CLAIM, 1, key_build_claim(build.id), self.builder_id
                    ),
                    5,
                )

    async def _claim(self, build_id: str) -> bool:
        key = key_build_claim(build_id)
        if await self.redis.set(key, self.builder_id, nx=True, ex=CLAIM_TTL_SECONDS):
            return True
        holder = await self.redis.get(key)
        if holder is None:  # expired in between
            return bool(await self.redis.set(key, self.builder_id, nx=True, ex=CLAIM_TTL_SECONDS))
        if holder == self.builder_id or await self.redis.exists(key_builder_heartbeat(holder)):
            return False
        # The holder stopped beating: it is gone, and its job came back to the group.
        log.info("build %s: taking over from builder %s, which is gone", build_id, holder)
        taken = await self.redis.eval(  # type: ignore[misc]
            _TAKE_OVER_CLAIM, 1, key, holder, self.builder_id, CLAIM_TTL_SECONDS
        )
        return bool(taken)

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
        loop = asyncio.get_running_loop()
        name = f"{request.build_id}-{attempt}"
        run = BuildRun(
            request=request,
            attempt=attempt,
            logs=logs,
            workspace=settings.workspaces_dir / name,
            archive=settings.workspaces_dir / f"{name}.tar.gz",
            started=loop.time(),
            deadline=loop.time() + request.config.timeout_seconds,
            timeout_seconds=request.config.timeout_seconds,
            commit_sha=request.commit_sha,
        )
        self._running[run.build_id] = run
        finished = False
        try:
            if await BuildStore(self.redis).cancel_requested(run.build_id):
                outcome = Outcome(BuildState.CANCELLED, "cancelled before it started")
            else:
                if build.state == BuildState.RUNNING:
                    await logs.system(f"Resuming after builder loss (attempt {attempt})")
                    await self._remove_leftovers(run)
                else:
                    await self._status(run, BuildState.RUNNING)
                outcome = await self._execute(run)
            # Containers and files go before the result is told: a finished build holds nothing.
            await self._clean_up(run)
            await self._finish(run, outcome)
            finished = True
        finally:
            self._running.pop(run.build_id, None)
            if not finished:
                await self._clean_up(run)
                # The builder is stopping (or broke) mid-build: this attempt's log ends here.
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self._abandon(run), 10)
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
        await run.logs.system("Builder stopped; the build will run again on another builder")
        await run.logs.close(timeout=5)

    async def _clean_up(self, run: BuildRun) -> None:
        """Remove the build's containers, workspace and archive, even while being cancelled."""

        async def clean() -> None:
            with contextlib.suppress(Exception):
                await remove_build_containers(self.docker, run.build_id, self.builder_id)
            await asyncio.to_thread(shutil.rmtree, run.workspace, ignore_errors=True)
            with contextlib.suppress(FileNotFoundError):
                await asyncio.to_thread(run.archive.unlink)

        cleaning = asyncio.ensure_future(clean())
        try:
            await asyncio.wait_for(asyncio.shield(cleaning), _CLEANUP_SECONDS)
        except TimeoutError:
            log.warning("build %s: clean-up is taking longer than expected", run.build_id)

    async def _execute(self, run: BuildRun) -> Outcome:
        try:
            return await self._build_and_deploy(run)
        except BuildStopped as stop:
            return Outcome(stop.state, stop.reason)
        except (CheckoutError, RepoConfigError, ContainerError, ArtifactError) as exc:
            return Outcome(BuildState.FAILED, str(exc))
        except Exception as exc:
            log.exception("build %s: unexpected error", run.build_id)
            return Outcome(BuildState.FAILED, f"internal builder error ({type(exc).__name__})")

    async def _build_and_deploy(self, run: BuildRun) -> Outcome:
        request, logs, settings = run.request, run.logs, self.settings

        await self._status(run, BuildState.RUNNING, step="checkout")
        target = request.commit_sha or request.branch or request.ref
        await logs.system(f"Cloning {redact_url(request.repo_url)} ({target})")
        run.commit_sha = await self._guard(
            run,
            checkout(
                request.repo_url,
                run.workspace,
                commit_sha=request.commit_sha,
                ref=request.ref,
                branch=request.branch,
                # The guard's deadline comes first and reports it as the build's time limit.
                timeout=max(1.0, run.deadline - asyncio.get_running_loop().time()) + 5,
            ),
        )
        await logs.system(f"Checked out commit {run.commit_sha}")

        plan = await asyncio.to_thread(resolve_plan, run.workspace, request.config)
        if plan.timeout_seconds < run.timeout_seconds:
            run.deadline = run.started + plan.timeout_seconds
            run.timeout_seconds = plan.timeout_seconds
        await self._describe_plan(run, plan)

        if plan.steps:
            await self._guard(
                run,
                ensure_image(
                    self.docker,
                    plan.image,
                    pull_policy=settings.build_pull_policy,
                    timeout=settings.build_pull_timeout_seconds,
                    on_pull=logs.system,
                ),
            )
            await hand_workspace_to(run.workspace, settings.build_user)
        for step, command in plan.steps:
            await self._run_step(run, plan, step, command)

        await self._status(run, BuildState.RUNNING, step="upload")
        output_dir = await asyncio.to_thread(find_output, run.workspace, plan.output)
        shown = output_dir.relative_to(run.workspace.resolve()).as_posix()
        await logs.system(f"Packing output folder '{shown}'")
        packed = await self._guard(run, pack_output(output_dir, run.archive))
        for skipped in packed.skipped:
            await logs.system(f"Skipped {skipped}")
        artifact = await self._guard(run, self.storage.upload_artifact(run.build_id, packed))
        await logs.system(
            f"Uploaded artifact: {packed.files} files, {packed.size} bytes, sha256 {packed.sha256}"
        )

        await self._status(run, BuildState.RUNNING, step="deploy")
        deployment = await self._deploy(run)
        return Outcome(
            BuildState.SUCCEEDED,
            artifact=artifact,
            deployment_id=deployment.id,
            deployment_url=deployment.url,
        )

    async def _describe_plan(self, run: BuildRun, plan: BuildPlan) -> None:
        steps = ", ".join(name for name, _ in plan.steps) or "none"
        output = plan.output or "dist or build (detected after the build)"
        await run.logs.system(
            f"Image {plan.image}; steps: {steps}; output: {output}; "
            f"time limit {run.timeout_seconds} s"
        )

    async def _run_step(self, run: BuildRun, plan: BuildPlan, step: str, command: str) -> None:
        request, settings = run.request, self.settings
        await self._status(run, BuildState.RUNNING, step=step)
        await run.logs.system(f"$ {command}")
        env = {
            **plan.env,
            "HOME": "/tmp",
            "CI": "true",
            "GOBUILD": "1",
            "GOBUILD_BUILD_ID": run.build_id,
            "GOBUILD_COMMIT_SHA": run.commit_sha or "",
            "GOBUILD_BRANCH": request.branch or "",
        }
        spec = StepSpec(
            image=plan.image,
            command=command,
            workspace=run.workspace,
            env=env,
            memory_mb=plan.memory_mb,
            cpus=plan.cpus,
            pids_limit=plan.pids_limit,
            user=settings.build_user,
            network=settings.build_network,
            labels={
                LABEL_BUILD_ID: run.build_id,
                LABEL_BUILDER_ID: self.builder_id,
                LABEL_STEP: step,
            },
            name_hint=step,
        )
        result = await run_step(
            self.docker, spec, on_line=run.logs.write, deadline=run.deadline, cancel=run.cancel
        )
        if result.cancelled:
            raise BuildStopped(BuildState.CANCELLED, "cancelled")
        if result.timed_out:
            raise BuildStopped(BuildState.TIMED_OUT, f"timed out after {run.timeout_seconds} s")
        if result.oom_killed:
            raise BuildStopped(BuildState.FAILED, f"out of memory (limit {plan.memory_mb} MiB)")
        if result.exit_code != 0:
            raise BuildStopped(
                BuildState.FAILED, f"step '{step}' exited with code {result.exit_code}"
            )
        await run.logs.system(f"Step '{step}' finished in {result.duration_seconds:.1f}s")

    async def _deploy(self, run: BuildRun) -> Deployment:
        request, settings = run.request, self.settings
        deployment_id = new_deployment_id(request.project_name)
        await self._guard(run, self.storage.deploy(deployment_id, run.build_id))
        deployment = Deployment(
            id=deployment_id,
            project_id=request.project_id,
            build_id=run.build_id,
            number=request.number,
            branch=request.branch,
            commit_sha=run.commit_sha,
            url=settings.deployment_url(deployment_id),
        )
        store = DeploymentStore(self.redis)
        await store.create(deployment)
        for state in ("created", "ready"):
            await self._publish(
                TOPIC_DEPLOYMENT_STATUS,
                DeploymentStatusChanged(
                    deployment_id=deployment.id,
                    build_id=run.build_id,
                    project_id=request.project_id,
                    state=state,
                    url=deployment.url,
                ),
            )
        await run.logs.system(f"Deployed to {deployment.url}")
        if request.production and await store.promote_if_newer(deployment):
            alias_url = settings.deployment_url(request.project_name)
            await self._publish(
                TOPIC_DEPLOYMENT_STATUS,
                DeploymentStatusChanged(
                    deployment_id=deployment.id,
                    build_id=run.build_id,
                    project_id=request.project_id,
                    state="promoted",
                    url=deployment.url,
                    alias_url=alias_url,
                ),
            )
            await run.logs.system(f"Promoted to production: {alias_url}")
        return deployment

    async def _guard(self, run: BuildRun, work: Coroutine[Any, Any, T]) -> T:
        """Run one stage under the build's deadline; stop it when the build is cancelled."""
        loop = asyncio.get_running_loop()
        task = asyncio.ensure_future(work)
        cancelled = asyncio.ensure_future(run.cancel.wait())
        try:
            done, _ = await asyncio.wait(
                {task, cancelled},
                timeout=max(0.0, run.deadline - loop.time()),
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            cancelled.cancel()
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        if task in done:
            return task.result()
        if run.cancel.is_set():
            raise BuildStopped(BuildState.CANCELLED, "cancelled")
        raise BuildStopped(BuildState.TIMED_OUT, f"timed out after {run.timeout_seconds} s")

    async def _finish(self, run: BuildRun, outcome: Outcome) -> None:
        """Last log line, final chunk, completion, then the terminal status."""
        request = run.request
        duration = asyncio.get_running_loop().time() - run.started
        if outcome.state == BuildState.SUCCEEDED:
            last_line = f"Build succeeded in {duration:.1f}s"
        elif outcome.state == BuildState.CANCELLED:
            last_line = f"Build cancelled after {duration:.1f}s"
        elif outcome.state == BuildState.TIMED_OUT:
            last_line = f"Build {outcome.reason}"
        else:
            last_line = f"Build failed: {outcome.reason}"
        await run.logs.system(last_line)
        await run.logs.close()
        log.info("build %s: %s", run.build_id, last_line)
        await self._publish(
            TOPIC_BUILD_COMPLETIONS,
            BuildCompleted(
                build_id=run.build_id,
                project_id=request.project_id,
                state=outcome.state,
                duration_seconds=round(duration, 3),
                commit_sha=run.commit_sha,
                artifact=outcome.artifact,
                deployment_id=outcome.deployment_id,
                deployment_url=outcome.deployment_url,
                error=outcome.reason,
            ),
        )
        await self._status(run, outcome.state, reason=outcome.reason)

    async def _status(
        self,
        run: BuildRun,
        state: BuildState,
        *,
        step: str | None = None,
        reason: str | None = None,
    ) -> None:
        await self._publish(
            TOPIC_BUILD_STATUS,
            BuildStatusChanged(
                build_id=run.build_id,
                project_id=run.request.project_id,
                state=state,
                number=run.request.number,
                step=step,
                reason=reason,
                builder_id=self.builder_id,
                commit_sha=run.commit_sha,
                attempt=run.attempt,
            ),
        )

    async def _publish(self, topic: str, event: Event) -> None:
        await self.producer.publish(topic, event)
