"""The build state machine: the one place that says which state changes are legal."""

from __future__ import annotations

from enum import StrEnum


class BuildState(StrEnum):
    QUEUED = "queued"
    DISPATCHED = "dispatched"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    TIMED_OUT = "timed_out"

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL_STATES


TERMINAL_STATES = frozenset(
    {BuildState.SUCCEEDED, BuildState.FAILED, BuildState.CANCELLED, BuildState.TIMED_OUT}
)

_ALLOWED: dict[BuildState, frozenset[BuildState]] = {
    # A build that waited in the queue past GOBUILD_QUEUE_TIMEOUT_SECONDS ends timed out.
    BuildState.QUEUED: frozenset(
        {BuildState.DISPATCHED, BuildState.CANCELLED, BuildState.FAILED, BuildState.TIMED_OUT}
    ),
    BuildState.DISPATCHED: frozenset({BuildState.RUNNING, BuildState.CANCELLED, BuildState.FAILED}),
    BuildState.RUNNING: frozenset(
        {BuildState.SUCCEEDED, BuildState.FAILED, BuildState.CANCELLED, BuildState.TIMED_OUT}
    ),
    BuildState.SUCCEEDED: frozenset(),
    BuildState.FAILED: frozenset(),
    BuildState.CANCELLED: frozenset(),
    BuildState.TIMED_OUT: frozenset(),
}


class IllegalTransition(ValueError):
    """A state change the state machine does not allow."""

    def __init__(self, current: BuildState, target: BuildState) -> None:
        super().__init__(f"a build cannot go from {current.value!r} to {target.value!r}")
        self.current = current
        self.target = target


def can_transition(current: BuildState, target: BuildState) -> bool:
    return target in _ALLOWED[current]


def check_transition(current: BuildState, target: BuildState) -> None:
    """Raise IllegalTransition unless `current -> target` is allowed."""
    if not can_transition(current, target):
        raise IllegalTransition(current, target)


def check_result_transition(current: BuildState, target: BuildState) -> None:
    """`check_transition` for what a builder reports: its `running` may never have been applied
    (lost with a broker's data, or still on its way on another topic), so a `dispatched` build
    takes any result a running one takes."""
    if (
        current == BuildState.DISPATCHED
        and target != BuildState.RUNNING
        and can_transition(BuildState.RUNNING, target)
    ):
        return
    check_transition(current, target)
