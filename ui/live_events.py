"""The dashboard's live path: its own Kafka consumer of `build-status`, `build-logs` and
`deployment-status`, and the registry of who watches what.

Each dashboard process reads every event once, in a consumer group of its own (so several
dashboards run side by side, each seeing everything) starting at the newest records, and hands
an event only to the page sessions watching that build or project. A hundred viewers of one
build cost one consumption.

Pages register a watch only after the gateway let the user see the build or project, so no
permission rule is repeated here. The most recent log chunks of each build are kept for a
short while: a page that just read the stored log (the backlog) finds here the chunks storage
had not written yet when it read.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
import time
from collections import OrderedDict, deque
from collections.abc import Iterable

from gobuild.platform.bus import consume_forever
from gobuild.platform.config import Settings
from gobuild.platform.events import (
    TOPIC_BUILD_LOGS,
    TOPIC_BUILD_STATUS,
    TOPIC_DEPLOYMENT_STATUS,
    BuildResourceSample,
    BuildStatusChanged,
    DeploymentStatusChanged,
    Event,
    LogChunk,
)

log = logging.getLogger(__name__)

TOPICS = (TOPIC_BUILD_STATUS, TOPIC_BUILD_LOGS, TOPIC_DEPLOYMENT_STATUS)
# Events waiting for one slow page before it is told it fell behind (and reloads its state).
WATCH_QUEUE_EVENTS = 5_000
# Recent chunks kept per build: younger than this, at most this many bytes, for this many builds.
RECENT_CHUNK_SECONDS = 60.0
RECENT_CHUNK_BYTES = 1024 * 1024
RECENT_CHUNK_BUILDS = 128


def dashboard_group_id() -> str:
    """A consumer group of this process alone: every dashboard sees every event."""
    return f"gobuild-dashboard-{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(4)}"


class Watch:
    """What one page session watches; events arrive on `queue` in the order consumed."""

    def __init__(self, registry: LiveEvents, builds: set[str], projects: set[str]) -> None:
        self._registry = registry
        self.builds = builds
        self.projects = projects
        self.queue: asyncio.Queue[Event] = asyncio.Queue(WATCH_QUEUE_EVENTS)
        # Set when events were dropped because the page did not keep up.
        self.fell_behind = False

    def offer(self, event: Event) -> None:
        try:
            self.queue.put_nowait(event)
        except asyncio.QueueFull:
            self.fell_behind = True

    def close(self) -> None:
        self._registry.unwatch(self)

    def __enter__(self) -> Watch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _RecentChunks:
    """The last chunks of one build, by arrival time and size."""

    def __init__(self) -> None:
        self.chunks: deque[tuple[float, int, LogChunk]] = deque()
        self.size = 0

    def add(self, chunk: LogChunk, now: float) -> None:
        size = sum(len(line) for line in chunk.lines) + 64
        self.chunks.append((now, size, chunk))
        self.size += size
        while self.chunks and (
            self.size > RECENT_CHUNK_BYTES or now - self.chunks[0][0] > RECENT_CHUNK_SECONDS
        ):
            _, dropped, _ = self.chunks.popleft()
            self.size -= dropped


class LiveEvents:
    """The consumer and the subscriber registry of one dashboard process."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.group_id = dashboard_group_id()
        self.joined = asyncio.Event()
        self._by_build: dict[str, set[Watch]] = {}
        self._by_project: dict[str, set[Watch]] = {}
        self._recent: OrderedDict[str, _RecentChunks] = OrderedDict()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(
            consume_forever(
                self.settings,
                TOPICS,
                self.dispatch,
                group_id=self.group_id,
                client_id="dashboard",
                joined=self.joined,
                from_beginning=False,
            ),
            name="dashboard-live-events",
        )
        self._task.add_done_callback(_log_end)

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def watch(self, *, builds: Iterable[str] = (), projects: Iterable[str] = ()) -> Watch:
        """Start receiving the events of these builds (status, log, resources, deployments)
        and projects (status, deployments); close the watch when the page goes away."""
        watch = Watch(self, set(builds), set(projects))
        for build_id in watch.builds:
            self._by_build.setdefault(build_id, set()).add(watch)
        for project_id in watch.projects:
            self._by_project.setdefault(project_id, set()).add(watch)
        return watch

    def unwatch(self, watch: Watch) -> None:
        for index, keys in ((self._by_build, watch.builds), (self._by_project, watch.projects)):
            for key in keys:
                watchers = index.get(key)
                if watchers is not None:
                    watchers.discard(watch)
                    if not watchers:
                        del index[key]

    def watcher_count(self, build_id: str) -> int:
        return len(self._by_build.get(build_id, ()))

    def recent_chunks(self, build_id: str) -> list[LogChunk]:
        """The chunks of this build consumed in the last moments, in order."""
        recent = self._recent.get(build_id)
        return [chunk for _, _, chunk in recent.chunks] if recent else []

    async def dispatch(self, event: Event) -> None:
        """Hand one consumed event to the watches it concerns."""
        build_id = getattr(event, "build_id", None)
        project_id = getattr(event, "project_id", None)
        if isinstance(event, LogChunk):
            self._remember(event)
        elif not isinstance(
            event, BuildStatusChanged | BuildResourceSample | DeploymentStatusChanged
        ):
            return
        for watch in self._by_build.get(build_id or "", ()):
            watch.offer(event)
        if isinstance(event, BuildStatusChanged | DeploymentStatusChanged):
            for watch in self._by_project.get(project_id or "", ()):
                if build_id not in watch.builds:
                    watch.offer(event)

    def _remember(self, chunk: LogChunk) -> None:
        recent = self._recent.get(chunk.build_id)
        if recent is None:
            recent = self._recent[chunk.build_id] = _RecentChunks()
            while len(self._recent) > RECENT_CHUNK_BUILDS:
                self._recent.popitem(last=False)
        else:
            self._recent.move_to_end(chunk.build_id)
        recent.add(chunk, time.monotonic())


def _log_end(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("the dashboard's event consumer stopped", exc_info=task.exception())
