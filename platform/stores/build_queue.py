"""The scheduler's queue of builds waiting for a builder, and which builder each job was given.

The orchestrator's scheduler is its only writer: a build is queued when its trigger is handled (or
again after its builder was lost), leaves the queue when a builder's slot is assigned to it
(`assign`, atomic: a builder is never given more jobs than its slots; a build whose result waits in
the outbox has left its slot), and its assignment ends with the build. After each round the
scheduler writes a snapshot of the queue (position, reason, estimated start of each waiting build)
that the API reads.

A build is never both queued and assigned: `enqueue` refuses an assigned build, `assign` takes
it out of the queue, `requeue` ends its assignment, each in one Lua script.
"""

from __future__ import annotations

import json
import time
from datetime import datetime
from typing import Literal, TypeVar

import redis.asyncio as aioredis
from pydantic import BaseModel, ValidationError

from gobuild.platform.stores.keys import (
    KEY_BUILD_ASSIGNMENTS,
    KEY_BUILD_QUEUE,
    KEY_QUEUE_SNAPSHOT,
    KEY_QUEUE_TICKETS,
    KEY_RESULT_OUTBOX,
    key_builder_assigned,
)

# Why a build waits (what `GET /api/builds/{id}` shows in `queue.reason`).
QueueReason = Literal[
    "no_free_slot",
    "project_concurrency_limit",
    "no_builder_with_labels",
    "waiting_for_dependency",
    "broker_unavailable",
]
QUEUE_REASON_TEXT: dict[QueueReason, str] = {
    "no_free_slot": "every builder slot is busy",
    "project_concurrency_limit": "the project's concurrency limit is reached",
    "no_builder_with_labels": "no builder has the labels the project requires",
    "waiting_for_dependency": "waiting for a build of a project it depends on",
    "broker_unavailable": "the message broker is unavailable",
}
Priority = Literal["high", "normal"]
AssignOutcome = Literal["assigned", "full", "gone"]
M = TypeVar("M", bound=BaseModel)


class QueueEntry(BaseModel):
    """A waiting build as the scheduler last saw it."""

    build_id: str
    project_id: str
    # 1 = the next build to start.
    position: int
    priority: Priority
    reason: QueueReason
    queued_at: datetime
    # When a slot is expected to be free for it; None: cannot be told (no builder can take it).
    estimated_start: datetime | None = None

    def public(self) -> dict[str, object]:
        shown = self.model_dump(mode="json", exclude={"build_id", "project_id"})
        shown["reason_text"] = QUEUE_REASON_TEXT[self.reason]
        return shown


class Assignment(BaseModel):
    """A job given to a builder: it holds one of that builder's slots until the build ends."""

    build_id: str
    builder_id: str
    attempt: int
    assigned_at: float
    # When the job was last sent to the builder again (it had not claimed the build in time).
    sent_at: float | None = None

    @property
    def last_sent_at(self) -> float:
        return self.sent_at or self.assigned_at


class QueueTicket(BaseModel):
    """What the queue keeps of a waiting build besides its place: since when it waits (the
    queue timeout counts from there) and which attempt its next job is."""

    queued_at: float
    attempt: int = 1


def queue_score(queued_at: float, priority: Priority, boost_seconds: float) -> float:
    """Lower goes first: FIFO by time queued, high priority `boost_seconds` earlier (so a
    normal build that waited longer than the boost goes before newer high ones)."""
    return queued_at - (boost_seconds if priority == "high" else 0.0)


# Assign only while the builder has a free slot, and only a build still in the queue. A build
# whose result waits in the outbox (KEYS[6]) holds no slot: its builder is done with it.
_ASSIGN = """
if redis.call('ZSCORE', KEYS[1], ARGV[1]) == false then return 0 end
local busy = 0
for _, id in ipairs(redis.call('SMEMBERS', KEYS[2])) do
  if redis.call('SISMEMBER', KEYS[6], id) == 0 then busy = busy + 1 end
end
if busy >= tonumber(ARGV[2]) then return -1 end
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('SADD', KEYS[2], ARGV[1])
redis.call('HSET', KEYS[3], ARGV[1], ARGV[3])
redis.call('HDEL', KEYS[4], ARGV[1])
redis.call('HDEL', KEYS[5], ARGV[1])
return 1
"""

# Queue a build that is not assigned; one already queued keeps its place and ticket.
_ENQUEUE = """
if redis.call('HEXISTS', KEYS[2], ARGV[1]) == 1 then return 0 end
if redis.call('ZADD', KEYS[1], 'NX', ARGV[2], ARGV[1]) == 1 then
  redis.call('HSET', KEYS[3], ARGV[1], ARGV[3])
  return 1
end
return 0
"""

# End the build's assignment (if any) and queue it with this score and ticket.
_REQUEUE = """
local raw = redis.call('HGET', KEYS[2], ARGV[1])
if raw then
  local builder = cjson.decode(raw)['builder_id']
  redis.call('SREM', ARGV[4] .. builder .. ARGV[5], ARGV[1])
  redis.call('HDEL', KEYS[2], ARGV[1])
end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
redis.call('HSET', KEYS[3], ARGV[1], ARGV[3])
return 1
"""

# End the build's assignment; its JSON, or false when it had none.
_UNASSIGN = """
local raw = redis.call('HGET', KEYS[1], ARGV[1])
if not raw then return false end
local builder = cjson.decode(raw)['builder_id']
redis.call('SREM', ARGV[2] .. builder .. ARGV[3], ARGV[1])
redis.call('HDEL', KEYS[1], ARGV[1])
return raw
"""

# Rewrite an assignment only while it is the same one (same builder, same attempt).
_REWRITE = """
local raw = redis.call('HGET', KEYS[1], ARGV[1])
if not raw then return 0 end
local current = cjson.decode(raw)
if current['builder_id'] ~= ARGV[3] or tonumber(current['attempt']) ~= tonumber(ARGV[4]) then
  return 0
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return 1
"""


class BuildQueue:
    def __init__(self, redis: aioredis.Redis) -> None:
        self.redis = redis

    # The queue ------------------------------------------------------------------------------

    async def enqueue(
        self, build_id: str, score: float, attempt: int = 1, queued_at: float | None = None
    ) -> bool:
        """Queue the build; False if it is queued already (it keeps its place) or assigned."""
        ticket = QueueTicket(queued_at=queued_at or time.time(), attempt=attempt)
        done = await self.redis.eval(  # type: ignore[misc]
            _ENQUEUE,
            3,
            KEY_BUILD_QUEUE,
            KEY_BUILD_ASSIGNMENTS,
            KEY_QUEUE_TICKETS,
            build_id,
            score,
            ticket.model_dump_json(),
        )
        return int(done) == 1

    async def requeue(
        self, build_id: str, score: float, attempt: int, queued_at: float | None = None
    ) -> None:
        """End the build's assignment, if any, and queue it (again) with `score`: its job did
        not reach the builder, or its builder was lost."""
        ticket = QueueTicket(queued_at=queued_at or time.time(), attempt=attempt)
        prefix, suffix = _builder_assigned_affixes()
        await self.redis.eval(  # type: ignore[misc]
            _REQUEUE,
            3,
            KEY_BUILD_QUEUE,
            KEY_BUILD_ASSIGNMENTS,
            KEY_QUEUE_TICKETS,
            build_id,
            score,
            ticket.model_dump_json(),
            prefix,
            suffix,
        )

    async def front_score(self) -> float:
        """A score that goes before every waiting build (for a build that was under way)."""
        first = await self.redis.zrange(KEY_BUILD_QUEUE, 0, 0, withscores=True)
        return min(float(first[0][1]), time.time()) - 1.0 if first else time.time()

    async def tickets(self, build_ids: list[str]) -> dict[str, QueueTicket]:
        """The tickets of these queued builds, by id (a build without one has none)."""
        if not build_ids:
            return {}
        raws = await self.redis.hmget(KEY_QUEUE_TICKETS, build_ids)
        found = {b: _parse(QueueTicket, raw) for b, raw in zip(build_ids, raws, strict=True)}
        return {b: t for b, t in found.items() if t is not None}

    async def ordered(self) -> list[tuple[str, float]]:
        """The waiting builds, the next first, with their scores."""
        return [
            (str(build_id), float(score))
            for build_id, score in await self.redis.zrange(KEY_BUILD_QUEUE, 0, -1, withscores=True)
        ]

    async def is_queued(self, build_id: str) -> bool:
        return await self.redis.zscore(KEY_BUILD_QUEUE, build_id) is not None

    async def remove(self, build_id: str) -> None:
        """Take the build out of the queue (it ended, or was cancelled)."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.zrem(KEY_BUILD_QUEUE, build_id)
            pipe.hdel(KEY_QUEUE_SNAPSHOT, build_id)
            pipe.hdel(KEY_QUEUE_TICKETS, build_id)
            await pipe.execute()

    # Assignments ----------------------------------------------------------------------------

    async def assign(self, build_id: str, builder_id: str, slots: int, attempt: int) -> bool:
        """Give the queued build to the builder if it has fewer than `slots` assigned builds
        still running (not counting those whose result waits in the outbox); False if it has
        not, or the build is no longer queued."""
        return await self.try_assign(build_id, builder_id, slots, attempt) == "assigned"

    async def try_assign(
        self, build_id: str, builder_id: str, slots: int, attempt: int
    ) -> AssignOutcome:
        """`assign`, telling why not: `full` (the builder's slots are taken) or `gone` (the
        build is no longer queued: someone else gave it out, or it ended)."""
        assignment = Assignment(
            build_id=build_id, builder_id=builder_id, attempt=attempt, assigned_at=time.time()
        )
        done = await self.redis.eval(  # type: ignore[misc]
            _ASSIGN,
            6,
            KEY_BUILD_QUEUE,
            key_builder_assigned(builder_id),
            KEY_BUILD_ASSIGNMENTS,
            KEY_QUEUE_SNAPSHOT,
            KEY_QUEUE_TICKETS,
            KEY_RESULT_OUTBOX,
            build_id,
            slots,
            assignment.model_dump_json(),
        )
        return {1: "assigned", 0: "gone"}.get(int(done), "full")  # type: ignore[return-value]

    async def assignment(self, build_id: str) -> Assignment | None:
        raw = await self.redis.hget(KEY_BUILD_ASSIGNMENTS, build_id)
        return _parse(Assignment, raw)

    async def assignments(self) -> list[Assignment]:
        raw = await self.redis.hgetall(KEY_BUILD_ASSIGNMENTS)
        found = (_parse(Assignment, value) for value in raw.values())
        return [a for a in found if a is not None]

    async def assigned_to(self, builder_id: str) -> set[str]:
        return {str(b) for b in await self.redis.smembers(key_builder_assigned(builder_id))}

    async def mark_sent(self, assignment: Assignment) -> None:
        """Note that the assignment's job was sent again now (if it still stands)."""
        again = assignment.model_copy(update={"sent_at": time.time()})
        await self.redis.eval(  # type: ignore[misc]
            _REWRITE,
            1,
            KEY_BUILD_ASSIGNMENTS,
            assignment.build_id,
            again.model_dump_json(),
            assignment.builder_id,
            assignment.attempt,
        )

    async def unassign(self, build_id: str) -> Assignment | None:
        """End the build's assignment (it ended, or its builder was lost): the slot is free."""
        prefix, suffix = _builder_assigned_affixes()
        raw = await self.redis.eval(  # type: ignore[misc]
            _UNASSIGN, 1, KEY_BUILD_ASSIGNMENTS, build_id, prefix, suffix
        )
        return _parse(Assignment, raw) if raw else None

    # The snapshot the API reads -------------------------------------------------------------

    async def write_snapshot(self, entries: list[QueueEntry]) -> None:
        """Replace the snapshot with this round's view of the queue."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.delete(KEY_QUEUE_SNAPSHOT)
            if entries:
                pipe.hset(
                    KEY_QUEUE_SNAPSHOT,
                    mapping={e.build_id: e.model_dump_json() for e in entries},
                )
            await pipe.execute()

    async def entry(self, build_id: str) -> QueueEntry | None:
        return _parse(QueueEntry, await self.redis.hget(KEY_QUEUE_SNAPSHOT, build_id))

    async def entries(self) -> list[QueueEntry]:
        """The waiting builds in order, as the scheduler last saw them."""
        raw = await self.redis.hgetall(KEY_QUEUE_SNAPSHOT)
        found = (_parse(QueueEntry, value) for value in raw.values())
        return sorted((e for e in found if e is not None), key=lambda e: e.position)


def _builder_assigned_affixes() -> tuple[str, str]:
    """What goes before and after a builder id in `key_builder_assigned` (for Lua)."""
    prefix, suffix = key_builder_assigned("\0").split("\0")
    return prefix, suffix


def _parse(model: type[M], raw: str | bytes | None) -> M | None:
    if raw is None:
        return None
    try:
        return model.model_validate(json.loads(raw))
    except (ValueError, ValidationError):
        return None
