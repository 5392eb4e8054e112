"""The builds page: the builds of the user's projects, newest first, live (new builds appear and
states change without a reload), filtered by project, branch and state, in pages."""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import urlencode

from fastapi import Request
from nicegui import background_tasks, ui

from gobuild.platform.build_state import BuildState
from gobuild.platform.events import BuildStatusChanged
from gobuild.ui.context import Dashboard
from gobuild.ui.display_formats import first_line, format_ago, format_duration, short_sha
from gobuild.ui.gateway_api import ApiCallError
from gobuild.ui.pages.frame import (
    FINISHED_STATES,
    error_page,
    page_frame,
    run_action,
    state_badge,
    to_sign_in,
)
from gobuild.ui.user_session import SignInRequired, UserSession

PAGE_SIZE = 25
# Builds read per project (the API's most recent; older ones are in the project's analytics).
BUILDS_PER_PROJECT = 200
# A burst of status events reloads the list once.
RELOAD_DELAY_SECONDS = 0.3
ALL = ""


async def load_builds(
    session: UserSession, projects: list[dict[str, Any]], project_id: str
) -> list[dict[str, Any]]:
    chosen = [p for p in projects if not project_id or p["id"] == project_id]
    answers = await asyncio.gather(
        *(session.get(f"/api/projects/{p['id']}/builds", limit=BUILDS_PER_PROJECT) for p in chosen)
    )
    builds = [build for answer in answers for build in answer["builds"]]
    builds.sort(key=lambda b: b["created_at"], reverse=True)
    return builds


def register(dashboard: Dashboard) -> None:
    @ui.page("/builds")
    async def builds_page(
        request: Request,
        project: str = ALL,
        branch: str = ALL,
        state: str = ALL,
        page: int = 1,
    ) -> Any:
        session = dashboard.session()
        if not session.signed_in:
            return to_sign_in(request)
        try:
            projects = (await session.get("/api/projects"))["projects"]
            builds = await load_builds(session, projects, project)
        except SignInRequired:
            return to_sign_in(request)
        except ApiCallError as exc:
            error_page(dashboard, session, exc)
            return None

        names = {p["id"]: p["name"] for p in projects}
        filters = {"project": project if project in names else ALL, "branch": branch}
        filters["state"] = state if state in BuildState._value2member_map_ else ALL
        shown = {"page": max(1, page)}
        badges: dict[str, ui.element] = {}
        content = page_frame(dashboard, "Builds", session)

        def matching() -> list[dict[str, Any]]:
            return [
                b
                for b in builds
                if (not filters["project"] or b["project_id"] == filters["project"])
                and (not filters["branch"] or (b.get("branch") or "") == filters["branch"])
                and (not filters["state"] or b["state"] == filters["state"])
            ]

        def remember_filters() -> None:
            query = {k: v for k, v in {**filters, "page": shown["page"]}.items() if v}
            if query.get("page") == 1:
                query.pop("page")
            suffix = f"?{urlencode(query)}" if query else ""
            ui.run_javascript(f"history.replaceState(null, '', {('/builds' + suffix)!r})")

        @ui.refreshable
        def build_table() -> None:
            found = matching()
            pages = max(1, -(-len(found) // PAGE_SIZE))
            shown["page"] = min(shown["page"], pages)
            start = (shown["page"] - 1) * PAGE_SIZE
            badges.clear()
            if not found:
                ui.label("No builds match.").classes("text-grey-8").props("data-testid=no-builds")
            with ui.column().classes("w-full gap-1"):
                for build in found[start : start + PAGE_SIZE]:
                    build_row(build, names, badges)
            if pages > 1:

                def turn(event: Any) -> None:
                    shown["page"] = int(event.value)
                    remember_filters()
                    build_table.refresh()

                ui.pagination(1, pages, direction_links=True, value=shown["page"]).on_value_change(
                    turn
                ).props("data-testid=pagination")
            ui.label(f"{len(found)} builds").classes("text-grey-7 text-sm")

        def refilter() -> None:
            shown["page"] = 1
            remember_filters()
            build_table.refresh()

        with content:
            ui.label("Builds").classes("text-2xl font-bold")
            with ui.row().classes("w-full items-end gap-4"):
                project_options = {ALL: "All projects", **names}
                ui.select(project_options, value=filters["project"], label="Project").bind_value(
                    filters, "project"
                ).on_value_change(refilter).classes("w-56").props("data-testid=filter-project")
                ui.input("Branch").bind_value(filters, "branch").on("keydown.enter", refilter).on(
                    "blur", refilter
                ).classes("w-56").props("data-testid=filter-branch")
                state_options = {ALL: "Any state", **{s.value: s.value for s in BuildState}}
                ui.select(state_options, value=filters["state"], label="State").bind_value(
                    filters, "state"
                ).on_value_change(refilter).classes("w-48").props("data-testid=filter-state")
            build_table()

        await ui.context.client.connected()
        watch = dashboard.live.watch(projects=names)
        reload: dict[str, asyncio.Task[None] | None] = {"task": None}

        async def reload_soon() -> None:
            await asyncio.sleep(RELOAD_DELAY_SECONDS)
            reload["task"] = None
            fresh = await run_action(lambda: load_builds(session, projects, ALL))
            if fresh is not None:
                builds[:] = fresh
                build_table.refresh()

        async def follow() -> None:
            with watch:
                while True:
                    event = await watch.queue.get()
                    if not isinstance(event, BuildStatusChanged):
                        continue
                    known = next((b for b in builds if b["id"] == event.build_id), None)
                    if known is not None:
                        known["state"] = event.state.value
                        badge = badges.get(event.build_id)
                        if badge is not None:
                            badge.clear()
                            with badge:
                                state_badge(event.state.value)
                    if (known is None or event.state.value in FINISHED_STATES) and reload[
                        "task"
                    ] is None:
                        reload["task"] = background_tasks.create(
                            reload_soon(), name="builds-reload", context=content
                        )

        task = background_tasks.create(follow(), name="builds-live", context=content)
        # Builds that started between reading the list and watching.
        reload["task"] = background_tasks.create(
            reload_soon(), name="builds-reload", context=content
        )
        ui.context.client.on_delete(task.cancel)
        return None


def build_row(build: dict[str, Any], names: dict[str, str], badges: dict[str, ui.element]) -> None:
    with (
        ui.card()
        .classes("w-full q-py-sm q-px-md")
        .props(f"flat bordered data-build-id={build['id']}")
        .props("data-testid=build-row"),
        ui.row().classes("w-full items-center no-wrap gap-4"),
    ):
        holder = ui.element("div").classes("w-28")
        badges[build["id"]] = holder
        with holder:
            state_badge(build["state"])
        with ui.column().classes("gap-0 grow min-w-0"):
            with ui.row().classes("items-center gap-2"):
                ui.link(
                    f"{names.get(build['project_id'], '?')} #{build.get('number') or '?'}",
                    f"/builds/{build['id']}",
                ).classes("font-bold").props("data-testid=build-link")
                ui.label(build.get("branch") or build.get("tag") or build.get("ref") or "").classes(
                    "text-grey-8 gb-mono text-sm"
                )
            with ui.row().classes("items-center gap-2 text-sm no-wrap min-w-0"):
                ui.label(short_sha(build.get("commit_sha"))).classes("gb-mono text-grey-7")
                ui.label(first_line(build.get("commit_message"))).classes(
                    "text-grey-9 ellipsis"
                ).props("data-testid=commit-message")
                if build.get("author"):
                    ui.label(f"by {build['author']}").classes("text-grey-7")
        with ui.column().classes("gap-0 items-end text-sm text-grey-7 w-32"):
            ui.label(format_ago(build.get("created_at")))
            ui.label(format_duration(build.get("duration_seconds")))
