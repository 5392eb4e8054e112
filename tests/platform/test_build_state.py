"""The one build state machine."""

from __future__ import annotations

import itertools

import pytest

from gobuild.platform.build_state import (
    TERMINAL_STATES,
    BuildState,
    IllegalTransition,
    can_transition,
    check_transition,
)

LEGAL_PATH = [BuildState.QUEUED, BuildState.DISPATCHED, BuildState.RUNNING, BuildState.SUCCEEDED]


def test_the_happy_path_is_legal() -> None:
    for current, target in itertools.pairwise(LEGAL_PATH):
        check_transition(current, target)


@pytest.mark.parametrize("end", [BuildState.FAILED, BuildState.CANCELLED, BuildState.TIMED_OUT])
def test_a_running_build_can_end_in_every_terminal_state(end: BuildState) -> None:
    assert can_transition(BuildState.RUNNING, end)


@pytest.mark.parametrize(
    ("current", "target"),
    [
        (BuildState.QUEUED, BuildState.RUNNING),  # skips dispatch
        (BuildState.QUEUED, BuildState.SUCCEEDED),
        (BuildState.DISPATCHED, BuildState.TIMED_OUT),
        (BuildState.RUNNING, BuildState.QUEUED),
        (BuildState.SUCCEEDED, BuildState.FAILED),
        (BuildState.CANCELLED, BuildState.RUNNING),
        (BuildState.RUNNING, BuildState.RUNNING),
    ],
)
def test_illegal_transitions_are_rejected_with_a_message(
    current: BuildState, target: BuildState
) -> None:
    with pytest.raises(IllegalTransition, match=f"from '{current.value}' to '{target.value}'"):
        check_transition(current, target)


def test_terminal_states_allow_no_transition() -> None:
    for state in TERMINAL_STATES:
        assert state.is_terminal
        assert not any(can_transition(state, target) for target in BuildState)
