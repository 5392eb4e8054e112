"""A project's build figures from its recorded builds: duration trend, success rate, queue time
(created → started) and builds per day."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from gobuild.ui.display_formats import parse_time

FINISHED = ("succeeded", "failed", "cancelled", "timed_out")


@dataclass
class BuildFigures:
    # (build number, seconds, state) of finished builds, oldest first.
    durations: list[tuple[int, float, str]] = field(default_factory=list)
    # (build number, seconds from created to started), oldest first.
    queue_times: list[tuple[int, float]] = field(default_factory=list)
    # day → {state: count}, oldest day first.
    per_day: dict[date, Counter[str]] = field(default_factory=dict)
    succeeded: int = 0
    finished: int = 0

    @property
    def success_rate(self) -> float | None:
        """Succeeded of the builds that ran to an end (cancelled ones left out)."""
        return self.succeeded / self.finished if self.finished else None


def build_figures(builds: list[dict[str, Any]]) -> BuildFigures:
    figures = BuildFigures()
    per_day: dict[date, Counter[str]] = {}
    for build in sorted(builds, key=lambda b: (b.get("number") or 0, b.get("created_at", ""))):
        number = build.get("number") or 0
        state = build.get("state", "")
        created = parse_time(build.get("created_at"))
        started = parse_time(build.get("started_at"))
        if created is not None:
            per_day.setdefault(created.date(), Counter())[state] += 1
        if created is not None and started is not None:
            figures.queue_times.append((number, max(0.0, (started - created).total_seconds())))
        if state in FINISHED and build.get("duration_seconds") is not None:
            figures.durations.append((number, float(build["duration_seconds"]), state))
        if state in ("succeeded", "failed", "timed_out"):
            figures.finished += 1
            figures.succeeded += state == "succeeded"
    figures.per_day = dict(sorted(per_day.items()))
    return figures


def daily_success_rates(figures: BuildFigures) -> list[tuple[date, float | None]]:
    rates = []
    for day, counts in figures.per_day.items():
        ended = counts["succeeded"] + counts["failed"] + counts["timed_out"]
        rates.append((day, round(100 * counts["succeeded"] / ended, 1) if ended else None))
    return rates
