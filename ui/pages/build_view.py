"""The view of one build, shared by the build page and the read-only share page: header, steps,
resource chart and the live log with its error summary, search and download, kept current
from the build's live events."""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from nicegui import ui

from gobuild.platform.events import (
    BuildResourceSample,
    BuildStatusChanged,
    DeploymentStatusChanged,
    LogChunk,
)
from gobuild.ui.build_steps import StepTracker
from gobuild.ui.console_lines import ConsoleLine
from gobuild.ui.context import Dashboard
from gobuild.ui.display_formats import (
    first_line,
    format_bytes,
    format_duration,
    format_time,
    parse_time,
    short_sha,
)
from gobuild.ui.live_log import LogFeed, OpenLog
from gobuild.ui.log_view import LogView
from gobuild.ui.pages.frame import FINISHED_STATES, link_out, state_badge

log = logging.getLogger(__name__)

# Lines the page holds (more only while reading further up); lines per "load earlier".
TAIL_LINES = 5_000
EARLIER_LINES = 1_000
# Live lines are sent to the page at most this often (at once after a quiet spell), and after
# a large batch only once the page had time for it (a second per LINES_PER_SECOND lines).
SEND_INTERVAL_SECONDS = 0.1
LINES_PER_SECOND = 10_000
# Lines shown around a line jumped to that the page no longer holds.
JUMP_CONTEXT_LINES = 300
# After a build ends, its record is read again until the orchestrator has recorded the end.
RECORD_RETRIES = 20
RECORD_RETRY_SECONDS = 0.5
STEP_ICONS = {
    "pending": ("radio_button_unchecked", "grey-6"),
    "running": ("autorenew", "blue-6"),
    "succeeded": ("check_circle", "green-7"),
    "failed": ("cancel", "red-7"),
    "cancelled": ("block", "orange-8"),
}
MIB = 1024 * 1024
# How often a queued build's place in the queue is read again.
QUEUE_POLL_SECONDS = 5.0


def queue_text(queue: dict[str, Any]) -> str:
    """`Queued — position 2: every builder slot is busy (estimated start ...)`."""
    text = f"Queued — position {queue.get('position', '?')}: {queue.get('reason_text', '')}"
    if queue.get("estimated_start"):
        text += f" (estimated start {format_time(queue['estimated_start'])})"
    return text


class BuildView:
    """One page's view of one build. `reload_build` reads the build record again (through the
    gateway, as the page's user or its share link)."""

    def __init__(
        self,
        dashboard: Dashboard,
        build: dict[str, Any],
        *,
        project_name: str,
        open_log: OpenLog,
        reload_build: Callable[[], Awaitable[dict[str, Any] | None]],
        log_download_url: str,
        artifact_url: str | None,
        actions: Callable[[], None] | None = None,
        load_resources: Callable[[], Awaitable[dict[str, Any] | None]] | None = None,
    ) -> None:
        self.dashboard = dashboard
        # The build's stored resource samples (`{samples: [...]}`), drawn before live ones.
        self.load_resources = load_resources
        self.build = build
        self.project_name = project_name
        self.reload_build = reload_build
        self.log_download_url = log_download_url
        self.artifact_url = artifact_url
        self.actions = actions
        self.steps = StepTracker()
        self.steps.observe_reason(build.get("reason"))
        self.steps.observe_record(build.get("steps"))
        self._steps_version = -1
        self.feed = LogFeed(open_log, self, tail_lines=TAIL_LINES, on_line=self._observe_line)
        self.samples: list[BuildResourceSample] = []
        self._sample_keys: set[tuple[datetime, str]] = set()
        self.window_mode = False
        self._errors: list[ConsoleLine] = []
        self._shown_actions: tuple[object, ...] = ()
        # Live lines not yet sent to the page (see append_lines).
        self._unsent: deque[ConsoleLine] = deque(maxlen=TAIL_LINES)
        self._unsent_overflowed = False
        self._send_timer: asyncio.TimerHandle | None = None
        self._next_send = float("-inf")

    # --- layout -------------------------------------------------------------------------

    def render(self) -> None:
        self.header()
        with ui.card().classes("w-full"):
            ui.label("Steps").classes("font-bold")
            self.step_row()
        self.resources_card()
        self.log_card()
        ui.timer(1.0, self._tick)
        ui.timer(QUEUE_POLL_SECONDS, self._poll_queue)

    def header(self) -> None:
        with ui.card().classes("w-full").props("data-testid=build-header"):
            with ui.row().classes("w-full items-center gap-3"):
                self.title()
                ui.space()
                self.action_buttons()
            self.details()

    def refresh_header(self) -> None:
        """Redraw what changed; the buttons only when what they depend on did (a button
        redrawn under the pointer would lose its click)."""
        self.title.refresh()
        self.details.refresh()
        if self._actions_key() != self._shown_actions:
            self.action_buttons.refresh()

    def _actions_key(self) -> tuple[object, ...]:
        return tuple(self.build.get(k) for k in ("state", "commit_sha", "branch"))

    @ui.refreshable_method
    def title(self) -> None:
        build = self.build
        with ui.element("div").props("data-testid=build-state"):
            state_badge(build["state"])
        ui.label(f"{self.project_name} #{build.get('number') or '?'}").classes("text-2xl font-bold")
        running = next((s.name for s in self.steps.steps if s.state == "running"), None)
        if build["state"] == "running" and (running or build.get("step")):
            ui.label(f"at {running or build['step']}").classes("text-grey-8")

    @ui.refreshable_method
    def action_buttons(self) -> None:
        self._shown_actions = self._actions_key()
        if self.actions is not None:
            with ui.row().classes("items-center gap-2"):
                self.actions()

    @ui.refreshable_method
    def details(self) -> None:
        build = self.build
        with ui.column().classes("w-full gap-2"):
            with ui.row().classes("items-center gap-2 text-sm"):
                ui.label(build.get("branch") or build.get("tag") or "").classes(
                    "gb-mono bg-grey-3 q-px-xs rounded"
                )
                ui.label(short_sha(build.get("commit_sha"))).classes("gb-mono text-grey-8")
                ui.label(first_line(build.get("commit_message"), 200)).classes(
                    "text-grey-10"
                ).props("data-testid=commit-message")
                if build.get("author"):
                    ui.label(f"by {build['author']}").classes("text-grey-7")
            if build["state"] == "queued" and build.get("queue"):
                ui.label(queue_text(build["queue"])).classes("text-grey-9").props(
                    "data-testid=build-queue"
                )
            if build.get("reason") and build["state"] in FINISHED_STATES - {"succeeded"}:
                ui.label(build["reason"]).classes("text-negative").props("data-testid=build-reason")
            with ui.grid(columns=4).classes("w-full gap-x-6 gap-y-1 text-sm"):
                self._fact("Created", format_time(build.get("created_at")))
                self._fact("Queued for", format_duration(self._queue_seconds()))
                self.duration_label = self._fact("Duration", self._duration_text())
                self._fact("Builder", build.get("builder_id") or "—")
                self.peak_cpu_label = self._fact("Peak CPU", self._peak_cpu_text())
                self.peak_memory_label = self._fact("Peak memory", self._peak_memory_text())
                artifact = build.get("artifact")
                if artifact:
                    self._fact("Artifact", f"{artifact['name']} ({format_bytes(artifact['size'])})")
                    self._fact("sha256", artifact["sha256"]).classes("gb-mono break-all")
            with ui.row().classes("items-center gap-4 text-sm"):
                if build.get("deployment_url"):
                    ui.label("Deployment:")
                    link_out(build["deployment_url"], build["deployment_url"]).props(
                        "data-testid=deployment-url"
                    )
                if artifact and self.artifact_url:
                    ui.button("Download artifact", icon="download").props(
                        f"flat dense tag=a href={self.artifact_url}"
                    )

    @staticmethod
    def _fact(name: str, value: str) -> ui.label:
        with ui.column().classes("gap-0"):
            ui.label(name).classes("text-grey-7 text-xs uppercase")
            return ui.label(value)

    @ui.refreshable_method
    def step_row(self) -> None:
        self._steps_version = self.steps.version
        with ui.row().classes("w-full gap-2").props("data-testid=steps"):
            for step in self.steps.steps:
                icon, colour = STEP_ICONS[step.state]
                failed = step.state == "failed"
                with (
                    ui.element("div")
                    .classes(
                        "row items-center no-wrap gap-1 q-px-sm q-py-xs rounded-borders bg-grey-2"
                        + (" gb-step-failed" if failed else "")
                    )
                    .props(f"data-testid=step data-step={step.name} data-step-state={step.state}")
                ):
                    ui.icon(icon, color=colour, size="1.2rem")
                    ui.label(step.name).classes("font-medium")
                    seconds = step.seconds
                    if seconds is None and step.state == "running" and step.started_at:
                        seconds = (datetime.now(UTC) - step.started_at).total_seconds()
                    if seconds is not None:
                        ui.label(format_duration(seconds)).classes("text-grey-7 text-xs")
                    if failed:
                        ui.label("failed").classes("text-negative text-xs font-bold")

    def resources_card(self) -> None:
        with ui.card().classes("w-full"):
            with ui.row().classes("w-full items-center"):
                ui.label("Resources").classes("font-bold")
                ui.space()
                self.resource_note = ui.label("").classes("text-grey-7 text-sm")
            self.chart = ui.echart(
                {
                    "animation": False,
                    "grid": {"left": 50, "right": 60, "top": 40, "bottom": 30},
                    "tooltip": {"trigger": "axis"},
                    "legend": {"data": ["CPU %", "Memory MiB"], "top": 0},
                    "xAxis": {"type": "value", "name": "s", "min": 0},
                    "yAxis": [
                        {"type": "value", "name": "CPU %", "min": 0},
                        {"type": "value", "name": "MiB", "min": 0},
                    ],
                    "series": [
                        {"name": "CPU %", "type": "line", "showSymbol": False, "data": []},
                        {
                            "name": "Memory MiB",
                            "type": "line",
                            "yAxisIndex": 1,
                            "showSymbol": False,
                            "data": [],
                        },
                    ],
                }
            ).classes("w-full h-56")
            self._update_resource_note()

    def log_card(self) -> None:
        with ui.card().classes("w-full gap-2"):
            with ui.row().classes("w-full items-center gap-2"):
                ui.label("Log").classes("font-bold")
                self.line_count = ui.label("").classes("text-grey-7 text-sm")
                self.line_count.props("data-testid=line-count")
                ui.space()
                search = ui.input(placeholder="Search the log").props(
                    "dense outlined clearable data-testid=log-search"
                )
                matches = ui.label("").classes("text-grey-7 text-sm w-24")

                async def run_search() -> None:
                    count = await self.view.search(search.value or "")
                    matches.set_text(f"{count} matches" if search.value else "")

                async def step(direction: int) -> None:
                    position = await self.view.step(direction)
                    if position:
                        matches.set_text(f"{position} of {matches.text.split()[-2]}")

                search.on("keydown.enter", run_search)
                search.on("clear", run_search)
                ui.button(icon="keyboard_arrow_up", on_click=lambda: step(-1)).props("flat dense")
                ui.button(icon="keyboard_arrow_down", on_click=lambda: step(1)).props("flat dense")
                ui.button("Download full log", icon="download").props(
                    f"flat dense tag=a href={self.log_download_url} data-testid=log-download"
                )
            self.errors_box = ui.column().classes("w-full gap-0")
            self.earlier = ui.button(
                "Load earlier lines", icon="expand_less", on_click=self.load_earlier
            ).props("flat dense data-testid=load-earlier")
            self.earlier.visible = False
            self.back = ui.button(
                "Back to the end of the log", icon="vertical_align_bottom", on_click=self.to_end
            ).props("flat dense")
            self.back.visible = False
            self.view = LogView(TAIL_LINES).classes("w-full").props("data-testid=log")
            self.view.on("first", self._held_first)

    # --- the log (LogSink) --------------------------------------------------------------

    def replace_lines(self, lines: list[ConsoleLine], total: int) -> None:
        self._unsent.clear()
        self._unsent_overflowed = False
        self.view.replace(lines)
        self.earlier.visible = bool(lines) and lines[0].number > 1
        self._count(total)

    def append_lines(self, lines: list[ConsoleLine]) -> None:
        """Lines go out at once after a quiet spell, else at most every SEND_INTERVAL, so a
        flood reaches the page as a few large batches (of which it keeps the last
        TAIL_LINES) instead of one message per chunk."""
        if not self.window_mode:
            self._unsent_overflowed |= len(self._unsent) + len(lines) > TAIL_LINES
            self._unsent.extend(lines)
        self._refresh_steps()
        if self._send_timer is not None:
            return
        loop = asyncio.get_running_loop()
        wait = self._next_send - loop.time()
        if wait <= 0:
            self._send_lines()
        else:
            self._send_timer = loop.call_later(wait, self._send_lines)

    def _send_lines(self) -> None:
        self._send_timer = None
        self._count(self.feed.total)
        lines = list(self._unsent)
        self._unsent.clear()
        pause = max(SEND_INTERVAL_SECONDS, len(lines) / LINES_PER_SECOND)
        self._next_send = asyncio.get_running_loop().time() + pause
        if not lines:
            return
        if self._unsent_overflowed:
            # More arrived than the page holds: it shows the newest ones from scratch.
            self._unsent_overflowed = False
            self.view.replace(lines)
            self.earlier.visible = lines[0].number > 1
        else:
            self.view.append(lines)

    def errors_changed(self, errors: list[ConsoleLine]) -> None:
        self._errors = errors
        self.errors_box.clear()
        if not errors:
            return
        with (
            self.errors_box,
            ui.expansion(f"Errors ({len(errors)})", icon="error", value=True)
            .classes("w-full bg-red-1 rounded-borders")
            .props("dense data-testid=error-summary"),
            ui.column().classes("w-full gap-0 max-h-48 overflow-auto"),
        ):
            for line in errors:
                with (
                    ui.row()
                    .classes("w-full no-wrap gap-2 cursor-pointer hover:bg-red-2 q-px-sm")
                    .props(f"data-testid=error-line data-line={line.number}")
                    .on("click", lambda _, n=line.number: self.jump(n))
                ):
                    ui.label(f"line {line.number}").classes("text-grey-8 gb-mono w-20")
                    ui.label(line.text).classes("gb-mono text-red-10 ellipsis")

    def _count(self, total: int) -> None:
        self.line_count.set_text(f"{total} lines")

    def _held_first(self, event: Any) -> None:
        self.view.note_first(event.args)
        self.earlier.visible = self.view.first_held > 1

    async def load_earlier(self) -> None:
        first = self.view.first_held
        if first <= 1:
            return
        lines = await self.feed.read_lines(max(1, first - EARLIER_LINES), first - 1)
        self.view.prepend(lines)

    async def jump(self, number: int) -> None:
        if await self.view.jump(number):
            return
        lines = await self.feed.read_lines(
            max(1, number - JUMP_CONTEXT_LINES), number + JUMP_CONTEXT_LINES
        )
        self.window_mode = True
        self.back.visible = True
        self._unsent.clear()
        self.view.replace(lines)
        await self.view.jump(number)

    async def to_end(self) -> None:
        self.window_mode = False
        self.back.visible = False
        await self.feed.load_backlog()
        self._observe_record()

    def _observe_line(self, line: str) -> None:
        self.steps.observe_line(line)

    def _observe_record(self) -> None:
        """The record's steps (states and durations) over what the log replayed told."""
        self.steps.observe_record(self.build.get("steps"))
        self._refresh_steps()

    def _refresh_steps(self) -> None:
        if self.steps.version != self._steps_version:
            self.step_row.refresh()

    # --- live ---------------------------------------------------------------------------

    async def follow(self) -> None:
        """Show the backlog, then keep the page current from the build's events."""
        live = self.dashboard.live
        build_id = self.build["id"]
        with live.watch(builds=[build_id]) as watch:
            # Taken together with the watch (no await in between): chunks storage may not
            # have written yet are here or in the watch's queue.
            recent = live.recent_chunks(build_id)
            await self.feed.load_backlog()
            self.feed.add_chunks(recent)
            # Samples published before the watch began (live ones after them are queued).
            await self._load_sample_history()
            # What changed between reading the record for the page and watching: read again.
            await self._reload_record(None)
            self._observe_record()
            try:
                while True:
                    if watch.fell_behind:
                        await self._catch_up(watch)
                    event = await watch.queue.get()
                    await self._apply(event)
            finally:
                self.feed.close()
                if self._send_timer is not None:
                    self._send_timer.cancel()

    async def _catch_up(self, watch: Any) -> None:
        """The page fell behind its events: start again from storage."""
        watch.fell_behind = False
        while not watch.queue.empty():
            event = watch.queue.get_nowait()
            if not isinstance(event, LogChunk):
                await self._apply(event)
        await self.feed.load_backlog()

    async def _apply(self, event: Any) -> None:
        if isinstance(event, LogChunk):
            self.feed.add_chunk(event)
        elif isinstance(event, BuildStatusChanged):
            self.build["state"] = event.state.value
            self.build["step"] = event.step
            if event.reason:
                self.build["reason"] = event.reason
            self.steps.observe_status(event.state.value, event.step, event.occurred_at)
            if event.state.value == "running" and not self.build.get("started_at"):
                self.build["started_at"] = event.occurred_at.isoformat()
            self.refresh_header()
            self._refresh_steps()
            if event.state.value in FINISHED_STATES:
                await self._reload_record(event.state.value)
        elif isinstance(event, BuildResourceSample):
            self._add_sample(event)
        elif isinstance(event, DeploymentStatusChanged):
            await self._reload_record(None)

    async def _reload_record(self, until_state: str | None) -> None:
        """Read the build record again; after the build ended, until it says so."""
        for _ in range(RECORD_RETRIES if until_state else 1):
            fresh = await self.reload_build()
            if fresh is None:
                return
            if until_state is None or fresh.get("state") == until_state:
                if all(self.build.get(key) == value for key, value in fresh.items()):
                    return
                self.build.update(fresh)
                self.steps.observe_reason(fresh.get("reason"))
                self.steps.observe_record(fresh.get("steps"))
                self.refresh_header()
                self._refresh_steps()
                self._update_resource_note()
                return
            await asyncio.sleep(RECORD_RETRY_SECONDS)

    async def _load_sample_history(self) -> None:
        """Draw the samples kept for the build (running or finished): the chart of a build
        opened after it ended, or the part of it before the page watched."""
        if self.load_resources is None:
            return
        try:
            answer = await self.load_resources()
            stored = [
                BuildResourceSample(
                    build_id=self.build["id"],
                    project_id=self.build.get("project_id") or "",
                    step=item["step"],
                    cpu_percent=item["cpu_percent"],
                    memory_bytes=item["memory_bytes"],
                    memory_limit_bytes=item.get("memory_limit_bytes"),
                    occurred_at=item["at"],
                )
                for item in (answer or {}).get("samples") or []
            ]
        except Exception:  # the chart is optional: the page works without it
            log.warning("resource samples of build %s not loaded", self.build["id"], exc_info=True)
            return
        if stored:
            self._add_samples(stored)

    def _add_sample(self, sample: BuildResourceSample) -> None:
        self._add_samples([sample])

    def _add_samples(self, samples: list[BuildResourceSample]) -> None:
        """Plot samples not drawn yet (a live one may also be among the stored ones)."""
        new = []
        for sample in samples:
            key = (sample.occurred_at, sample.step)
            if key not in self._sample_keys:
                self._sample_keys.add(key)
                new.append(sample)
        if not new:
            return
        self.samples.extend(new)
        for sample in new:
            self._plot(sample)
        self.chart.update()
        self._update_resource_note()
        self.peak_cpu_label.set_text(self._peak_cpu_text())
        self.peak_memory_label.set_text(self._peak_memory_text())

    def _plot(self, sample: BuildResourceSample) -> None:
        start = parse_time(self.build.get("started_at")) or self.samples[0].occurred_at
        at = round(max(0.0, (sample.occurred_at - start).total_seconds()), 1)
        options = self.chart.options
        options["series"][0]["data"].append([at, round(sample.cpu_percent, 1)])
        options["series"][1]["data"].append([at, round(sample.memory_bytes / MIB, 1)])
        if sample.memory_limit_bytes:
            limit = round(sample.memory_limit_bytes / MIB)
            options["series"][1]["markLine"] = {
                "symbol": "none",
                "silent": True,
                "lineStyle": {"color": "#c62828", "type": "dashed"},
                "label": {"formatter": f"memory limit {limit} MiB", "position": "insideEndTop"},
                "data": [{"yAxis": limit}],
            }
            options["yAxis"][1]["max"] = round(limit * 1.1)

    def _update_resource_note(self) -> None:
        self.chart.visible = bool(self.samples) or self.build["state"] not in FINISHED_STATES
        if self.samples:
            self.resource_note.set_text(f"{len(self.samples)} samples, about one a second")
        elif self.build["state"] in FINISHED_STATES:
            self.resource_note.set_text(
                "No samples were kept for this build; the header shows the peaks."
            )
        else:
            self.resource_note.set_text("Waiting for the first sample...")

    # --- numbers for the header ---------------------------------------------------------

    def _queue_seconds(self) -> float | None:
        created = parse_time(self.build.get("created_at"))
        started = parse_time(self.build.get("started_at"))
        return (started - created).total_seconds() if created and started else None

    def _duration_text(self) -> str:
        if self.build.get("duration_seconds") is not None:
            return format_duration(self.build["duration_seconds"])
        started = parse_time(self.build.get("started_at"))
        if started and self.build["state"] not in FINISHED_STATES:
            return format_duration((datetime.now(UTC) - started).total_seconds()) + " so far"
        return "—"

    def _peak_cpu_text(self) -> str:
        peak = self.build.get("peak_cpu_percent")
        if self.samples:
            peak = max([peak or 0.0, *(s.cpu_percent for s in self.samples)])
        return f"{peak:.0f}%" if peak is not None else "—"

    def _peak_memory_text(self) -> str:
        peak = self.build.get("peak_memory_bytes")
        limit = next(
            (s.memory_limit_bytes for s in reversed(self.samples) if s.memory_limit_bytes), None
        )
        if self.samples:
            peak = max([peak or 0, *(s.memory_bytes for s in self.samples)])
        if peak is None:
            return "—"
        return format_bytes(peak) + (f" of {format_bytes(limit)}" if limit else "")

    async def _poll_queue(self) -> None:
        """A queued build's place changes without an event: read the record again."""
        if self.build["state"] == "queued":
            await self._reload_record(None)

    def _tick(self) -> None:
        if self.build["state"] in ("running", "dispatched"):
            self.duration_label.set_text(self._duration_text())
            if any(s.state == "running" for s in self.steps.steps):
                self.step_row.refresh()
