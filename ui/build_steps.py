"""The steps of a build (checkout, the repository's steps, upload, deploy) with their state and
duration, for the build page.

The build record keeps the steps of its latest attempt with their states and durations
(`steps`); `observe_record` takes them, and they are preferred. Records made before it kept
them name only their current step, so the steps are also read from what GoBuild says in
the log (`Cloning ...`, `Image ...; steps: install, build; ...`, `$ <command>`, `Step 'build'
finished in 1.2s`, `Packing output folder ...`, `Deployed to ...`, `Build failed: ...`) and,
while the page is open, from the build's status events, whose times give every step a
duration.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

StepState = Literal["pending", "running", "succeeded", "failed", "cancelled"]

_PLAN = re.compile(r"^Image .*?; steps: (?P<steps>.*?); output: ")
_FINISHED = re.compile(r"^Step '(?P<step>[^']+)' finished in (?P<seconds>[0-9.]+)s$")
_FAILED_STEP = re.compile(r"step '(?P<step>[^']+)' exited with code")
_ENDINGS: dict[str, StepState] = {
    "Build succeeded": "succeeded",
    "Build failed": "failed",
    "Build cancelled": "cancelled",
    "Build timed out": "failed",
}
# First characters of GoBuild's lines that move the steps (a cheap test for every line).
_MARKER_STARTS = frozenset("CRI$SPDB")
FIRST_STEP = "checkout"
LAST_STEPS = ("upload", "deploy")


@dataclass
class StepView:
    name: str
    state: StepState = "pending"
    seconds: float | None = None
    started_at: datetime | None = None


class StepTracker:
    """What is known of one build's steps; fed log lines and status events in order."""

    def __init__(self) -> None:
        self._commands: list[str] = []
        self._steps: dict[str, StepView] = {}
        self._current: str | None = None
        self._commands_started = 0
        self._plan_known = False
        self.ended: StepState | None = None
        # Counts changes, so a page redraws the steps only when they changed.
        self.version = 0
        self._reset([], known=False)

    @property
    def steps(self) -> list[StepView]:
        return list(self._steps.values())

    @property
    def failed_step(self) -> str | None:
        return next((s.name for s in self._steps.values() if s.state == "failed"), None)

    def observe_line(self, line: str) -> None:
        """One log line; only GoBuild's own lines move the steps."""
        if line[:1] not in _MARKER_STARTS:
            return
        self.version += 1
        if line.startswith("Cloning "):
            self._start(FIRST_STEP)
        elif line.startswith("Resuming after builder loss"):
            self._commands_started = 0
        elif line.startswith("Image ") and (plan := _PLAN.match(line)):
            steps = [s.strip() for s in plan.group("steps").split(",")]
            self._reset([] if steps == ["none"] else [s for s in steps if s])
        elif line.startswith("$ ") and self._plan_known:
            if self._commands_started < len(self._commands):
                self._start(self._commands[self._commands_started])
                self._commands_started += 1
        elif line.startswith("Step '") and (finished := _FINISHED.match(line)):
            step = self._steps.get(finished.group("step"))
            if step is not None:
                step.state = "succeeded"
                step.seconds = float(finished.group("seconds"))
        elif line.startswith("Packing output folder"):
            self._start("upload")
        elif line.startswith("Deployed to "):
            self._start("deploy")
        elif line.startswith("Build "):
            for prefix, state in _ENDINGS.items():
                if line.startswith(prefix):
                    self.end(state)

    def observe_status(self, state: str, step: str | None, at: datetime) -> None:
        """A status event: the build runs `step` since `at`, or ended at `at`."""
        self.version += 1
        if state == "running" and step:
            self._start(step, at)
        elif state in ("succeeded", "failed", "cancelled", "timed_out"):
            ending: StepState = "succeeded" if state == "succeeded" else "failed"
            self.end("cancelled" if state == "cancelled" else ending, at)

    def observe_reason(self, reason: str | None) -> None:
        """A failed build's reason names the step that failed (`step 'build' exited ...`)."""
        found = _FAILED_STEP.search(reason or "")
        self.version += 1
        if found and found.group("step") in self._steps:
            step = self._steps[found.group("step")]
            step.state = "failed"

    def observe_record(self, steps: list[dict[str, Any]] | None) -> None:
        """The steps the build record keeps (`name`, `state`, `started_at`, `duration_seconds`):
        their states and durations replace what the log and events told."""
        if not steps:
            return
        self.version += 1
        for item in steps:
            name = item.get("name")
            if not name:
                continue
            step = self._add(name)
            state = item.get("state")
            step.state = "failed" if state == "timed_out" else state  # type: ignore[assignment]
            started = _parse_time(item.get("started_at"))
            if started is not None:
                step.started_at = started
            if item.get("duration_seconds") is not None:
                step.seconds = float(item["duration_seconds"])
            if step.state == "running":
                self._current = name

    def end(self, state: StepState, at: datetime | None = None) -> None:
        self.ended = state
        current = self._steps.get(self._current or "")
        if current is not None and current.state == "running":
            current.state = "succeeded" if state == "succeeded" else state
            self._finish_timing(current, at)
        if state == "succeeded":
            for step in self._steps.values():
                if step.state in ("running", "pending"):
                    step.state = "succeeded"

    def _reset(self, commands: list[str], *, known: bool = True) -> None:
        """The plan: checkout, the repository's steps, upload, deploy (keeping what is known)."""
        self._plan_known = known
        self._commands = commands
        old = self._steps
        names = [FIRST_STEP, *commands, *LAST_STEPS]
        self._steps = {name: old.get(name) or StepView(name) for name in names}

    def _add(self, name: str) -> StepView:
        step = self._steps.get(name)
        if step is None:
            # A step the log did not announce (events before the plan line): put it before
            # upload, keeping the order.
            names = list(self._steps)
            index = names.index("upload") if "upload" in names else len(names)
            names.insert(index, name)
            step = StepView(name)
            self._steps = {n: self._steps.get(n) or step for n in names}
        return step

    def _start(self, name: str, at: datetime | None = None) -> None:
        step = self._add(name)
        if self._current and self._current != name:
            previous = self._steps.get(self._current)
            if previous is not None and previous.state == "running":
                previous.state = "succeeded"
                self._finish_timing(previous, at)
        # Steps before this one that never reported were done (or skipped) by now.
        for other in self._steps.values():
            if other is step:
                break
            if other.state in ("pending", "running"):
                other.state = "succeeded"
        self._current = name
        if step.state != "running":
            step.state = "running"
        if at is not None and step.started_at is None:
            step.started_at = at

    @staticmethod
    def _finish_timing(step: StepView, at: datetime | None) -> None:
        if step.seconds is None and at is not None and step.started_at is not None:
            step.seconds = max(0.0, (at - step.started_at).total_seconds())


def _parse_time(value: object) -> datetime | None:
    if isinstance(value, datetime):
        return value
    if isinstance(value, str) and value:
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
    return None
