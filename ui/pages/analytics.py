"""A project's analytics as charts: build duration trend, success rate, queue time and builds per
day, from the project's recorded builds."""

from __future__ import annotations

from typing import Any

from fastapi import Request
from nicegui import ui

from gobuild.ui.build_analytics import BuildFigures, build_figures, daily_success_rates
from gobuild.ui.context import Dashboard
from gobuild.ui.gateway_api import ApiCallError
from gobuild.ui.pages.frame import (
    STATE_COLOURS,
    error_page,
    is_path_id,
    not_found_page,
    page_frame,
    to_sign_in,
)
from gobuild.ui.user_session import SignInRequired

# The most builds the API lists at once.
RECENT_BUILDS = 500
CHART_COLOURS = {
    "succeeded": "#2e7d32",
    "failed": "#c62828",
    "cancelled": "#ef6c00",
    "timed_out": "#d84315",
    "running": "#1e88e5",
    "dispatched": "#78909c",
    "queued": "#9e9e9e",
}


def register(dashboard: Dashboard) -> None:
    @ui.page("/projects/{project_id}/analytics")
    async def analytics_page(request: Request, project_id: str) -> Any:
        session = dashboard.session()
        if not session.signed_in:
            return to_sign_in(request)
        if not is_path_id(project_id):
            not_found_page(dashboard, session, "Project")
            return None
        try:
            project = await session.get(f"/api/projects/{project_id}")
            builds = (await session.get(f"/api/projects/{project_id}/builds", limit=RECENT_BUILDS))[
                "builds"
            ]
        except SignInRequired:
            return to_sign_in(request)
        except ApiCallError as exc:
            if exc.status == 404:
                not_found_page(dashboard, session, "Project")
            else:
                error_page(dashboard, session, exc)
            return None

        figures = build_figures(builds)
        content = page_frame(dashboard, f"{project['name']} analytics", session)
        with content:
            with ui.row().classes("w-full items-center gap-4"):
                ui.label(f"{project['name']}: analytics").classes("text-2xl font-bold")
                ui.space()
                ui.link("Deployments", f"/projects/{project['id']}")
                ui.link("Builds", f"/builds?project={project['id']}")
            rate = figures.success_rate
            with ui.row().classes("gap-6"):
                summary("Builds", str(len(builds)))
                summary("Success rate", f"{100 * rate:.0f}%" if rate is not None else "—")
                if figures.durations:
                    ordered = sorted(seconds for _, seconds, _ in figures.durations)
                    summary("Median duration", f"{ordered[len(ordered) // 2]:.1f}s")
            if not builds:
                ui.label("No builds yet: the charts fill in as the project builds.").classes(
                    "text-grey-8"
                )
            with ui.grid(columns=2).classes("w-full gap-4"):
                chart_card("Build duration (s)", duration_chart(figures))
                chart_card("Success rate per day (%)", success_chart(figures))
                chart_card("Queue time, created → started (s)", queue_chart(figures))
                chart_card("Builds per day", per_day_chart(figures))
        return None


def summary(name: str, value: str) -> None:
    with ui.card().classes("q-pa-md"):
        ui.label(name).classes("text-grey-7 text-xs uppercase")
        ui.label(value).classes("text-2xl font-bold")


def chart_card(title: str, options: dict[str, Any]) -> None:
    with ui.card().classes("w-full"):
        ui.label(title).classes("font-bold")
        ui.echart(options).classes("w-full h-64")


def _base(x_name: str) -> dict[str, Any]:
    return {
        "animation": False,
        "tooltip": {"trigger": "axis"},
        "grid": {"left": 50, "right": 20, "top": 20, "bottom": 40},
        "xAxis": {"type": "category", "name": x_name, "data": []},
        "yAxis": {"type": "value", "min": 0},
        "series": [],
    }


def duration_chart(figures: BuildFigures) -> dict[str, Any]:
    options = _base("build")
    options["xAxis"]["data"] = [f"#{number}" for number, _, _ in figures.durations]
    options["series"] = [
        {
            "type": "line",
            "name": "duration",
            "data": [
                {
                    "value": round(seconds, 1),
                    "itemStyle": {"color": CHART_COLOURS.get(state, "#9e9e9e")},
                }
                for _, seconds, state in figures.durations
            ],
        }
    ]
    return options


def success_chart(figures: BuildFigures) -> dict[str, Any]:
    rates = daily_success_rates(figures)
    options = _base("day")
    options["xAxis"]["data"] = [day.isoformat() for day, _ in rates]
    options["yAxis"]["max"] = 100
    options["series"] = [
        {"type": "line", "name": "success rate", "connectNulls": True,
         "data": [rate for _, rate in rates], "itemStyle": {"color": "#2e7d32"}}
    ]  # fmt: skip
    return options


def queue_chart(figures: BuildFigures) -> dict[str, Any]:
    options = _base("build")
    options["xAxis"]["data"] = [f"#{number}" for number, _ in figures.queue_times]
    options["series"] = [
        {"type": "bar", "name": "queue time",
         "data": [round(seconds, 2) for _, seconds in figures.queue_times]}
    ]  # fmt: skip
    return options


def per_day_chart(figures: BuildFigures) -> dict[str, Any]:
    options = _base("day")
    days = list(figures.per_day)
    options["xAxis"]["data"] = [day.isoformat() for day in days]
    options["legend"] = {"bottom": 0}
    options["grid"]["bottom"] = 60
    states = [s for s in STATE_COLOURS if any(figures.per_day[d][s] for d in days)]
    options["series"] = [
        {
            "type": "bar",
            "stack": "builds",
            "name": state,
            "itemStyle": {"color": CHART_COLOURS.get(state, "#9e9e9e")},
            "data": [figures.per_day[day][state] for day in days],
        }
        for state in states
    ]
    return options
