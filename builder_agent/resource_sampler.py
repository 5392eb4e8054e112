"""CPU and memory of a running step's container, sampled about once a second.

Each sample is a quick one-shot stats call to the engine (in a thread); CPU use is the change
in the container's CPU time between two samples, as `docker stats` computes it, so the first
sample of a step only sets the baseline. That one is taken half an interval after the step
starts: a step that ends sooner (most steps of small builds) costs the engine no stats call.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import docker.errors
from docker.models.containers import Container

from gobuild.platform.waiting import wait_within

log = logging.getLogger(__name__)

SAMPLE_INTERVAL_SECONDS = 1.0
_STATS_CALL_SECONDS = 10.0


@dataclass(frozen=True)
class ResourceSample:
    """`cpu_percent` is of one CPU (200 = two CPUs busy); memory excludes reclaimable cache."""

    cpu_percent: float
    memory_bytes: int
    memory_limit_bytes: int | None


SampleCallback = Callable[[ResourceSample], Awaitable[None]]


def _cpu_times(stats: Mapping[str, Any]) -> tuple[int, int, int] | None:
    cpu = stats.get("cpu_stats") or {}
    total = (cpu.get("cpu_usage") or {}).get("total_usage")
    system = cpu.get("system_cpu_usage")
    if total is None or system is None:
        return None
    online = cpu.get("online_cpus") or len((cpu.get("cpu_usage") or {}).get("percpu_usage") or [1])
    return int(total), int(system), int(online)


def sample_from_stats(
    previous: Mapping[str, Any] | None, current: Mapping[str, Any]
) -> ResourceSample | None:
    """A sample from two consecutive one-shot stats of a container; None without a baseline
    or when the container has no stats (it has exited)."""
    now = _cpu_times(current)
    before = _cpu_times(previous) if previous is not None else None
    memory = current.get("memory_stats") or {}
    if now is None or before is None or "usage" not in memory:
        return None
    total_delta, system_delta = now[0] - before[0], now[1] - before[1]
    cpu_percent = total_delta / system_delta * now[2] * 100 if system_delta > 0 else 0.0
    details = memory.get("stats") or {}
    # cgroup v2 reports `inactive_file`, v1 `total_inactive_file`: page cache the kernel can
    # reclaim, which `docker stats` leaves out too.
    cache = details.get("inactive_file", details.get("total_inactive_file", 0))
    used = max(0, int(memory["usage"]) - int(cache))
    limit = memory.get("limit")
    return ResourceSample(
        cpu_percent=round(max(0.0, cpu_percent), 2),
        memory_bytes=used,
        memory_limit_bytes=int(limit) if limit else None,
    )


class ResourceSampler:
    """Samples the container `watch` is given until the `sampling` block ends."""

    def __init__(
        self, on_sample: SampleCallback, interval: float = SAMPLE_INTERVAL_SECONDS
    ) -> None:
        self.on_sample = on_sample
        self.interval = interval
        self._task: asyncio.Task[None] | None = None

    def watch(self, container: Container) -> None:
        """Start sampling `container` (a step's, just started)."""
        if self._task is None:
            self._task = asyncio.create_task(
                self._sample(container), name=f"resources-{container.name}"
            )

    async def stop(self) -> None:
        if self._task is None:
            return
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None

    async def _sample(self, container: Container) -> None:
        previous: dict[str, Any] | None = None
        try:
            await asyncio.sleep(self.interval / 2)
            while True:
                try:
                    stats = await wait_within(
                        asyncio.to_thread(container.stats, stream=False, one_shot=True),
                        _STATS_CALL_SECONDS,
                    )
                except (docker.errors.NotFound, docker.errors.APIError, TimeoutError) as exc:
                    log.debug("no stats of container %s: %s", container.name, exc)
                    return  # the step's container is gone
                sample = sample_from_stats(previous, stats)
                previous = stats
                if sample is not None:
                    await self.on_sample(sample)
                await asyncio.sleep(self.interval)
        except Exception:
            # Resource samples are a view of the build, never a reason for it to fail.
            log.exception("sampling container %s failed", container.name)


@contextlib.asynccontextmanager
async def sampling(
    on_sample: SampleCallback, interval: float = SAMPLE_INTERVAL_SECONDS
) -> AsyncIterator[ResourceSampler]:
    """A sampler whose sampling stops, at the latest, when the block ends."""
    sampler = ResourceSampler(on_sample, interval)
    try:
        yield sampler
    finally:
        await sampler.stop()
