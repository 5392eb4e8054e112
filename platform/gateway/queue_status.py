"""Where queued builds wait, as the API shows it: the scheduler's snapshot of the queue (place,
reason, estimated start), and for a build queued since its last round a place from the queue's
own order (reason `no_free_slot` until the scheduler says otherwise).

A build waits while it is `queued`, and also while it is back in the queue after its builder
was lost or its job never reached it: its state still says `dispatched` or `running` (states
never go back), its place in the queue says it waits again."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from gobuild.platform.auth.permissions import Action, Principal
from gobuild.platform.build_state import BuildState
from gobuild.platform.gateway.authorization import may_in_project
from gobuild.platform.gateway.builder_status import builder_statuses, fleet_totals
from gobuild.platform.gateway.context import GatewayContext
from gobuild.platform.gateway.project_names import readable_names
from gobuild.platform.gateway.schemas import QueuedBuild, QueueList, QueueStatus
from gobuild.platform.records import Build
from gobuild.platform.stores.build_queue import (
    QUEUE_REASON_TEXT,
    BuildQueue,
    QueueEntry,
    QueueReason,
    QueueTicket,
)

FALLBACK_REASON: QueueReason = "no_free_slot"


def status_of(entry: QueueEntry) -> QueueStatus:
    return QueueStatus.model_validate(entry.public())


def fallback_status(
    build: Build, queue_order: list[str], tickets: Mapping[str, QueueTicket]
) -> QueueStatus:
    """A queued build the scheduler has not placed yet: its place in the queue's order (behind
    every waiting build when it is not in the queue yet either)."""
    position = queue_order.index(build.id) + 1 if build.id in queue_order else len(queue_order) + 1
    high = build.production or build.source == "redeploy"
    ticket = tickets.get(build.id)
    return QueueStatus(
        position=position,
        priority="high" if high else "normal",
        reason=FALLBACK_REASON,
        reason_text=QUEUE_REASON_TEXT[FALLBACK_REASON],
        queued_at=datetime.fromtimestamp(ticket.queued_at, UTC) if ticket else build.created_at,
        estimated_start=None,
    )


async def _queue_order(queue: BuildQueue) -> tuple[list[str], dict[str, QueueTicket]]:
    """The waiting builds' ids, the next first, and their tickets."""
    order = [build_id for build_id, _ in await queue.ordered()]
    return order, await queue.tickets(order)


def _may_wait(build: Build) -> bool:
    """Queued, or under way and perhaps back in the queue (its builder was lost)."""
    return not build.state.is_terminal


def _waits(build: Build, queued: Collection[str]) -> bool:
    """Whether the build waits for a builder, given the ids in the queue."""
    return build.state == BuildState.QUEUED or (_may_wait(build) and build.id in queued)


async def queue_status(ctx: GatewayContext, build: Build) -> QueueStatus | None:
    """The build's place in the queue while it waits; None otherwise."""
    if not _may_wait(build):
        return None
    queue = BuildQueue(ctx.redis)
    if build.state != BuildState.QUEUED and not await queue.is_queued(build.id):
        return None
    entry = await queue.entry(build.id)
    if entry is not None:
        return status_of(entry)
    return fallback_status(build, *await _queue_order(queue))


async def queue_statuses(ctx: GatewayContext, builds: Iterable[Build]) -> dict[str, QueueStatus]:
    """`queue_status` of each waiting build among `builds`, by id (the queue read once)."""
    candidates = [b for b in builds if _may_wait(b)]
    if not candidates:
        return {}
    queue = BuildQueue(ctx.redis)
    order, tickets = await _queue_order(queue)
    in_queue = set(order)
    waiting = [b for b in candidates if _waits(b, in_queue)]
    if not waiting:
        return {}
    entries = {e.build_id: e for e in await queue.entries()}
    return {
        b.id: status_of(entries[b.id]) if b.id in entries else fallback_status(b, order, tickets)
        for b in waiting
    }


@dataclass(frozen=True)
class WaitingBuild:
    build: Build
    status: QueueStatus


async def waiting_builds(ctx: GatewayContext) -> list[WaitingBuild]:
    """Every build waiting for a builder, the next first: the queue and the scheduler's
    snapshot of it, without builds that no longer wait."""
    queue = BuildQueue(ctx.redis)
    entries = {e.build_id: e for e in await queue.entries()}
    order, tickets = await _queue_order(queue)
    in_queue = set(order)
    ids = list(dict.fromkeys([*order, *entries]))
    waiting = []
    for build in await ctx.builds.get_many(ids):
        if not _waits(build, in_queue):
            continue
        entry = entries.get(build.id)
        status = status_of(entry) if entry else fallback_status(build, order, tickets)
        waiting.append(WaitingBuild(build, status))
    rank = {build_id: index for index, build_id in enumerate(ids)}
    return sorted(waiting, key=lambda w: (w.status.position, rank[w.build.id]))


async def queue_list(ctx: GatewayContext, principal: Principal) -> QueueList:
    """The waiting builds the caller may read (with their places among all), and the
    instance's totals, which name no build."""
    waiting = await waiting_builds(ctx)
    shown = [w for w in waiting if may_in_project(principal, w.build.project_id, Action.BUILD_READ)]
    names = await readable_names(
        ctx, principal, (w.build.project_id for w in shown), Action.BUILD_READ
    )
    statuses = await builder_statuses(ctx.redis)
    return QueueList(
        builds=[
            QueuedBuild(
                **w.status.model_dump(),
                build_id=w.build.id,
                project_id=w.build.project_id,
                project_name=names.get(w.build.project_id, w.build.project_id),
                number=w.build.number,
                branch=w.build.branch,
            )
            for w in shown
        ],
        totals=fleet_totals(statuses, waiting=len(waiting)),
    )
