"""The build view draws the resource samples kept for a build when the page opens (running or
finished), then live ones after them, each sample once."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

from gobuild.platform.events import BuildResourceSample
from gobuild.ui.pages.build_view import BuildView

START = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


class Label:
    def __init__(self) -> None:
        self.text = ""

    def set_text(self, text: str) -> None:
        self.text = text


def stored(seconds: int, cpu: float, memory: int, step: str = "build") -> dict[str, Any]:
    return {
        "at": (START + timedelta(seconds=seconds)).isoformat(),
        "step": step,
        "cpu_percent": cpu,
        "memory_bytes": memory,
        "memory_limit_bytes": 512 * 1024 * 1024,
    }


def view_of(build: dict[str, Any], answer: dict[str, Any] | None) -> BuildView:
    async def load_resources() -> dict[str, Any] | None:
        return answer

    async def reload_build() -> dict[str, Any] | None:
        return None

    view = BuildView(
        SimpleNamespace(),  # type: ignore[arg-type]
        build,
        project_name="site",
        open_log=lambda: None,  # type: ignore[arg-type,return-value]
        reload_build=reload_build,
        log_download_url="/log.txt",
        artifact_url=None,
        load_resources=load_resources,
    )
    # What `render` draws, reduced to what the samples change.
    view.chart = SimpleNamespace(  # type: ignore[assignment]
        options={"series": [{"data": []}, {"data": []}], "yAxis": [{}, {}]},
        update=lambda: None,
        visible=True,
    )
    view.resource_note = Label()  # type: ignore[assignment]
    view.peak_cpu_label = Label()  # type: ignore[assignment]
    view.peak_memory_label = Label()  # type: ignore[assignment]
    return view


async def test_a_finished_build_is_charted_from_its_stored_samples() -> None:
    build = {"id": "b_1", "state": "succeeded", "started_at": START.isoformat()}
    view = view_of(build, {"samples": [stored(1, 50.0, 10 * 2**20), stored(2, 150.0, 30 * 2**20)]})

    await view._load_sample_history()

    series = view.chart.options["series"]
    assert series[0]["data"] == [[1.0, 50.0], [2.0, 150.0]]
    assert series[1]["data"] == [[1.0, 10.0], [2.0, 30.0]]
    assert series[1]["markLine"]["data"] == [{"yAxis": 512}]
    assert view.chart.visible and view.resource_note.text.startswith("2 samples")
    assert view.peak_cpu_label.text == "150%"


async def test_live_samples_follow_the_stored_ones_without_drawing_one_twice() -> None:
    build = {"id": "b_1", "project_id": "p_1", "state": "running", "started_at": START.isoformat()}
    view = view_of(build, {"samples": [stored(1, 50.0, 10 * 2**20)]})
    await view._load_sample_history()

    def live(seconds: int, cpu: float) -> BuildResourceSample:
        return BuildResourceSample(
            build_id="b_1",
            project_id="p_1",
            step="build",
            cpu_percent=cpu,
            memory_bytes=10 * 2**20,
            occurred_at=START + timedelta(seconds=seconds),
        )

    view._add_sample(live(1, 50.0))  # also stored: published before the page watched
    view._add_sample(live(2, 80.0))
    assert view.chart.options["series"][0]["data"] == [[1.0, 50.0], [2.0, 80.0]]


async def test_no_stored_samples_or_a_failed_load_leave_the_chart_empty() -> None:
    build = {"id": "b_1", "state": "failed"}
    for answer in (None, {"samples": []}, {"samples": [{"bogus": 1}]}):
        view = view_of(build, answer)
        await view._load_sample_history()
        assert view.samples == [] and view.chart.options["series"][0]["data"] == []
