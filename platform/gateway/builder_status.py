"""The builders as the API shows them: online ones from their heartbeats, lost ones (silent for
less than a day) from the builders' index, each with the builds given to it or running on it
and its free slots."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import redis.asyncio as aioredis

from gobuild.platform.auth.permissions import Action, Principal
from gobuild.platform.gateway.authorization import may_in_project
from gobuild.platform.gateway.context import GatewayContext
from gobuild.platform.gateway.project_names import readable_names
from gobuild.platform.gateway.schemas import BuilderList, BuilderView, QueueTotals, RunningBuild
from gobuild.platform.stores.build_queue import BuildQueue
from gobuild.platform.stores.claims import BuilderFleet, LiveBuilder
from gobuild.platform.stores.keys import KEY_BUILDERS


@dataclass(frozen=True)
class BuilderStatus:
    id: str
    # None: its heartbeat expired (lost).
    live: LiveBuilder | None
    last_seen: float | None
    # The builds the scheduler gave it and those its heartbeat says it runs.
    builds: tuple[str, ...]

    @property
    def slots_free(self) -> int:
        return max(0, self.live.capacity - len(self.builds)) if self.live else 0


async def builder_statuses(redis: aioredis.Redis) -> list[BuilderStatus]:
    """Every builder heard from in the last day: online ones first, then by id."""
    live = await BuilderFleet(redis).live()
    seen = {str(b): float(at) for b, at in await redis.zrange(KEY_BUILDERS, 0, -1, withscores=True)}
    given: dict[str, set[str]] = {}
    for assignment in await BuildQueue(redis).assignments():
        given.setdefault(assignment.builder_id, set()).add(assignment.build_id)
    statuses = []
    for builder_id in {*seen, *live, *given}:
        builder = live.get(builder_id)
        running = set(builder.running) if builder else set()
        last_seen = builder.last_seen if builder and builder.last_seen else seen.get(builder_id)
        statuses.append(
            BuilderStatus(
                id=builder_id,
                live=builder,
                last_seen=last_seen,
                builds=tuple(sorted(running | given.get(builder_id, set()))),
            )
        )
    return sorted(statuses, key=lambda s: (s.live is None, s.id))


def fleet_totals(statuses: list[BuilderStatus], waiting: int) -> QueueTotals:
    """Counts over the whole instance: waiting and running builds, online builders' slots."""
    online = [s for s in statuses if s.live is not None]
    return QueueTotals(
        waiting=waiting,
        running=len({build_id for s in statuses for build_id in s.builds}),
        slots_total=sum(s.live.capacity for s in online if s.live is not None),
        slots_free=sum(s.slots_free for s in online),
    )


async def builder_list(ctx: GatewayContext, principal: Principal) -> BuilderList:
    """The builders, their builds named by project only where the caller may read them."""
    statuses = await builder_statuses(ctx.redis)
    build_ids = sorted({b for s in statuses for b in s.builds})
    projects = {
        b.id: b.project_id
        for b in await ctx.builds.get_many(build_ids)
        if may_in_project(principal, b.project_id, Action.BUILD_READ)
    }
    names = await readable_names(ctx, principal, projects.values())
    return BuilderList(builders=[_view(s, projects, names) for s in statuses])


def _view(status: BuilderStatus, projects: dict[str, str], names: dict[str, str]) -> BuilderView:
    builder = status.live
    running = [
        RunningBuild(
            build_id=build_id,
            project_id=projects.get(build_id),
            project_name=names.get(projects.get(build_id, "")),
        )
        for build_id in status.builds
    ]
    return BuilderView(
        id=status.id,
        state="online" if builder else "lost",
        host=(builder.host or None) if builder else None,
        slots_total=builder.capacity if builder else None,
        slots_free=status.slots_free if builder else None,
        labels=list(builder.labels) if builder else [],
        cpus=builder.cpus if builder else None,
        memory_bytes=builder.memory_bytes if builder else None,
        started_at=_parse_time(builder.started_at) if builder else None,
        last_seen=datetime.fromtimestamp(status.last_seen, UTC) if status.last_seen else None,
        running=running,
    )


def _parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None
