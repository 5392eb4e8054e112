"""The builder agent: takes build jobs from `build-requests` and runs them to a deployment.

The agent composes small parts, as Woodpecker's runner does: one `JobWorker` consumes the jobs
the scheduler gave this builder and runs each as a task, at most `builder_concurrency` at once;
`BuildClaims` keep two builders from running one build and let a live builder take over a dead
one's; `BuildRunner` takes one job through the `BuildPipeline` (checkout → steps → artifact →
deploy); `BuildReporter` publishes the events; `ResultDelivery` keeps each result in the outbox
until the orchestrator applied it. The agent itself owns the connections, the heartbeat (which
starts once the worker hears its jobs: the scheduler gives jobs only to builders that beat) and
the cancel listener.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from pathlib import Path
from typing import TypeVar

import docker
import httpx
import redis.asyncio as aioredis

from gobuild.builder_agent.build_caches import BuildCaches
from gobuild.builder_agent.ca_trust import prepare_ca_trust
from gobuild.builder_agent.container import ensure_build_network
from gobuild.builder_agent.delivery import ResultDelivery
from gobuild.builder_agent.pipeline import BuildPipeline
from gobuild.builder_agent.reporter import BuildReporter
from gobuild.builder_agent.runner import BuildRunner
from gobuild.builder_agent.warm_containers import WarmContainers
from gobuild.builder_agent.worker import JobWorker, consumer_group
from gobuild.platform.bus import EventProducer, wait_for_topics
from gobuild.platform.config import Settings
from gobuild.platform.events import utcnow
from gobuild.platform.repo_credentials import (
    BUILD_SECRETS_PURPOSE,
    RepoCredentialCipher,
    SecretCipher,
)
from gobuild.platform.service import start_task, stop_tasks
from gobuild.platform.storage_client import StorageClient
from gobuild.platform.stores.builds import BuildStore
from gobuild.platform.stores.caches import CacheIndex
from gobuild.platform.stores.channels import follow_channel
from gobuild.platform.stores.claims import BuildClaims, parse_labels
from gobuild.platform.stores.connection import connect_redis
from gobuild.platform.stores.deployment_records import DeploymentRecords
from gobuild.platform.stores.keys import CHANNEL_CANCEL
from gobuild.platform.stores.outbox import ResultOutbox
from gobuild.platform.waiting import wait_event, wait_within

__all__ = ["Agent", "consumer_group", "default_builder_id", "host_memory_bytes"]

log = logging.getLogger(__name__)

T = TypeVar("T")

HEARTBEAT_INTERVAL_SECONDS = 5.0
# Claims are renewed with the heartbeat, well inside their lifetime.
CLAIM_REFRESH_SECONDS = 10.0


def default_builder_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


def host_memory_bytes() -> int | None:
    """The host's physical memory, as the builder announces it."""
    with contextlib.suppress(ValueError, OSError, AttributeError):
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    return None


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
        self._runner: BuildRunner | None = None
        self._warm: WarmContainers | None = None
        self._delivery: ResultDelivery | None = None
        self._stop_requested = asyncio.Event()
        # Set by the worker once it hears its jobs; the heartbeat starts then.
        self._jobs_heard = asyncio.Event()
        # Set when a job ended: the heartbeat says so at once.
        self._beat_now = asyncio.Event()

    # Lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        """Connect to the broker, Redis, storage (HTTP client) and the Docker engine, whose
        build network is created if missing."""
        settings = self.settings
        await wait_for_topics(settings)
        self._producer = EventProducer(settings, client_id=f"builder-{self.builder_id}")
        await self._producer.start()
        self._redis = connect_redis(settings.redis_url)
        await wait_within(self._redis.ping(), 10)
        self._http = httpx.AsyncClient(timeout=httpx.Timeout(30.0, connect=5.0))
        self._docker = await asyncio.to_thread(docker.from_env, timeout=60)
        if self._docker.api.base_url.startswith("http+docker://"):
            # A local socket: no proxy applies, and `requests` would look for one in the
            # environment on every call (a build makes a dozen).
            self._docker.api.trust_env = False
        await wait_within(asyncio.to_thread(self._docker.ping), 30)
        await ensure_build_network(self._docker, settings.build_network)
        await asyncio.to_thread(settings.workspaces_dir.mkdir, parents=True, exist_ok=True)
        ca_trust = await asyncio.to_thread(prepare_ca_trust, settings)
        if ca_trust.extra_certificates:
            log.info(
                "build containers trust %d extra CA certificate(s) from %s",
                ca_trust.extra_certificates,
                settings.build_ca_bundle,
            )
        reporter = BuildReporter(self._producer, self.builder_id)
        storage = StorageClient(self._http, settings)
        if settings.build_container_reuse_seconds > 0:
            self._warm = WarmContainers(
                self._docker,
                self.builder_id,
                settings.workspaces_dir,
                keep_seconds=settings.build_container_reuse_seconds,
                max_idle=settings.builder_concurrency,
                max_uses=settings.build_container_max_uses,
                # The scheduler hears at once that a project's next build can start here warm.
                on_kept=self._beat_now.set,
            )
            left = await self._warm.remove_leftovers()
            if left:
                log.info("removed %d warm container(s) a previous run left", left)
        pipeline = BuildPipeline(
            settings,
            self.builder_id,
            self._docker,
            storage,
            DeploymentRecords(self._redis),
            reporter,
            await RepoCredentialCipher.load(self._redis, settings),
            build_secrets=await SecretCipher.load(self._redis, settings, BUILD_SECRETS_PURPOSE),
            ca_trust=ca_trust,
            caches=BuildCaches(settings, storage, CacheIndex(self._redis), self._docker, ca_trust),
            warm=self._warm,
        )
        builds = BuildStore(self._redis)
        self._delivery = ResultDelivery(ResultOutbox(self._redis), builds, reporter)
        self._runner = BuildRunner(
            settings,
            self.builder_id,
            producer=self._producer,
            builds=builds,
            claims=self.claims,
            docker_client=self._docker,
            pipeline=pipeline,
            reporter=reporter,
            delivery=self._delivery,
        )
        log.info("builder %s started (capacity %d)", self.builder_id, settings.builder_concurrency)

    async def stop(self) -> None:
        """Close every connection start() opened."""
        if self._redis is not None:
            with contextlib.suppress(Exception):
                await wait_within(self.claims.end_heartbeat(), 5)
            await self._redis.aclose()
            self._redis = None
        if self._http is not None:
            await self._http.aclose()
            self._http = None
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None
        if self._warm is not None:
            await self._warm.close()
            self._warm = None
        if self._docker is not None:
            await asyncio.to_thread(self._docker.close)
            self._docker = None
        self._runner = None
        self._delivery = None
        log.info("builder %s stopped", self.builder_id)

    def request_stop(self) -> None:
        """Stop taking jobs; running builds are abandoned, and the scheduler gives them to
        another builder once this one's heartbeat is gone (it ends with the agent)."""
        self._stop_requested.set()

    async def run(self) -> None:
        try:
            await self.start()
            await self.serve()
        finally:
            await self.stop()

    async def serve(self) -> None:
        """Run the worker, the heartbeat, the cancel listener and the re-delivery of results
        from the outbox until `request_stop()`."""
        worker = JobWorker(
            self.settings,
            self.builder_id,
            self.runner.handle_request,
            ready=self._jobs_heard,
            on_job_end=self._beat_now.set,
        )
        tasks: set[asyncio.Task[None]] = set()
        start_task(tasks, "worker", worker.run())
        start_task(tasks, "heartbeat", self._heartbeat_loop())
        start_task(tasks, "cancel-listener", self._cancel_listener())
        start_task(tasks, "outbox", self._started(self._delivery).run_forever())
        if self._warm is not None:
            start_task(tasks, "warm-containers", self._warm.expire_forever())
        try:
            await self._stop_requested.wait()
        finally:
            await stop_tasks(tasks)

    @property
    def running_builds(self) -> list[str]:
        return sorted(self._runner.running) if self._runner else []

    def cancel_build(self, build_id: str) -> bool:
        """Cancel a build if it runs here; True if it did."""
        return self.runner.cancel(build_id)

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
    def runner(self) -> BuildRunner:
        return self._started(self._runner)

    @property
    def warm_containers(self) -> WarmContainers | None:
        """Its warm containers (None: GOBUILD_BUILD_CONTAINER_REUSE_SECONDS is 0)."""
        return self._warm

    @property
    def claims(self) -> BuildClaims:
        return BuildClaims(self.redis, self.builder_id)

    # Background loops ----------------------------------------------------------------------

    def heartbeat_status(self) -> dict[str, object]:
        """What the heartbeat tells the scheduler and the API about this builder."""
        return {
            "id": self.builder_id,
            "host": socket.gethostname(),
            "labels": list(parse_labels(self.settings.builder_labels)),
            "cpus": os.cpu_count(),
            "memory_bytes": host_memory_bytes(),
            "running": self.running_builds,
            "capacity": self.settings.builder_concurrency,
            "started_at": self.started_at.isoformat(),
            "warm": sorted(w.key.project_id for w in self._warm.idle()) if self._warm else [],
        }

    async def _heartbeat_loop(self) -> None:
        # A builder that beats is given jobs: only once it hears them.
        await self._jobs_heard.wait()
        last_claim_refresh = 0.0
        while True:
            self._beat_now.clear()
            try:
                await self.claims.beat(self.heartbeat_status())
                now = time.monotonic()
                if now - last_claim_refresh >= CLAIM_REFRESH_SECONDS:
                    await self._renew_claims()
                    last_claim_refresh = now
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("heartbeat failed: %s", exc)
            await wait_event(self._beat_now, HEARTBEAT_INTERVAL_SECONDS)

    async def _renew_claims(self) -> None:
        builds = BuildStore(self.redis)
        for build_id, run in list(self.runner.running.items()):
            await self.claims.renew(build_id)
            # A cancel published while the channel was not subscribed is not lost.
            if await builds.cancel_requested(build_id):
                run.cancel.set()

    async def _cancel_listener(self) -> None:
        # A cancel published while the channel was not subscribed is found by the heartbeat.
        await follow_channel(self.redis, CHANNEL_CANCEL, self.cancel_build, "cancel channel")
