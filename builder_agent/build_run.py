"""One attempt of one build on this builder, and how it ended."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from gobuild.builder_agent.container import ExecSession, PendingRemovals
from gobuild.builder_agent.log_stream import LogStreamer
from gobuild.builder_agent.resource_sampler import ResourceSample
from gobuild.builder_agent.warm_containers import WarmContainer
from gobuild.platform.build_state import BuildState
from gobuild.platform.events import ArtifactRef, BuildRequested, CacheUse

T = TypeVar("T")


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
    # The step it last reported (checkout, install, build, test, upload, deploy): where a
    # build that does not succeed ended.
    step: str | None = None
    # The highest resource use of its steps so far (reported with the completion).
    peak_cpu_percent: float | None = None
    peak_memory_bytes: int | None = None
    # How each cache was used so far (reported with the completion).
    caches: list[CacheUse] = field(default_factory=list)
    # Its containers that are done and being removed while the build goes on.
    removals: PendingRemovals = field(default_factory=PendingRemovals)
    # How many status and completion events of this attempt were numbered (`seq` of events).
    events_numbered: int = 0
    # The clone container, kept after the checkout for the steps to run in: one container
    # started per build instead of two (GOBUILD_BUILD_STEPS_IN_CLONE_CONTAINER).
    clone_session: ExecSession | None = None
    # The warm container the build checks out in (taken from an earlier build of its project
    # or started for it): its folder is the workspace, and it is given back, not removed, at
    # the build's end (GOBUILD_BUILD_CONTAINER_REUSE_SECONDS).
    warm: WarmContainer | None = None

    @property
    def build_id(self) -> str:
        return self.request.build_id

    def record_peak(self, sample: ResourceSample) -> None:
        self.peak_cpu_percent = max(self.peak_cpu_percent or 0.0, sample.cpu_percent)
        self.peak_memory_bytes = max(self.peak_memory_bytes or 0, sample.memory_bytes)

    def elapsed(self) -> float:
        return asyncio.get_running_loop().time() - self.started

    def keep_clone_session(self, session: ExecSession) -> None:
        self.clone_session = session

    def use_warm(self, warm: WarmContainer) -> None:
        """Check out and run the steps in `warm`, with its folder as the workspace."""
        self.warm = warm
        self.workspace = warm.folder
        self.clone_session = warm.session

    def drop_warm(self) -> None:
        """Forget a warm container that turned out unusable (its pool removes it): the build
        goes on as if it never had it."""
        self.warm = None
        self.clone_session = None

    def release_clone_session(self) -> None:
        """No more commands in the kept clone container: remove it (in the background, with the
        build's removals), unless it is a warm one (given back at the build's end); a checkout
        still holding on in it for a step is let go."""
        if self.clone_session is not None and self.warm is None:
            self.clone_session.release(self.removals)
        elif self.clone_session is not None:
            self.clone_session.forget_held()
        self.clone_session = None

    def next_event_seq(self) -> int:
        """The number of this attempt's next status or completion event (1 first)."""
        self.events_numbered += 1
        return self.events_numbered


async def guard(run: BuildRun, work: Coroutine[Any, Any, T]) -> T:
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
