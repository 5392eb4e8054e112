"""A project's deployments: the production alias and the deployment it serves (and whether it is
pinned there, said plainly), the project's scheduling settings, the history of deployments, and
per deployment promote / instant rollback and redeploy, for the roles that may."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import Request
from nicegui import background_tasks, ui

from gobuild.platform.auth.permissions import Action
from gobuild.platform.events import BuildStatusChanged, DeploymentStatusChanged
from gobuild.ui.context import Dashboard
from gobuild.ui.display_formats import first_line, format_ago, format_time, short_sha
from gobuild.ui.gateway_api import ApiCallError
from gobuild.ui.pages.build_detail import allowed_in_project
from gobuild.ui.pages.frame import (
    FINISHED_STATES,
    error_page,
    is_path_id,
    link_out,
    not_found_page,
    page_frame,
    run_action,
    to_sign_in,
)
from gobuild.ui.pages.project_scheduling import scheduling_card
from gobuild.ui.user_session import SignInRequired

RELOAD_DELAY_SECONDS = 0.5


def register(dashboard: Dashboard) -> None:
    @ui.page("/projects/{project_id}")
    async def deployments_page(request: Request, project_id: str) -> Any:
        session = dashboard.session()
        if not session.signed_in:
            return to_sign_in(request)
        if not is_path_id(project_id):
            not_found_page(dashboard, session, "Project")
            return None
        try:
            project = await session.get(f"/api/projects/{project_id}")
            listing = await session.get(f"/api/projects/{project_id}/deployments")
            allowed = await allowed_in_project(session, project["id"])
            readable = (await session.get("/api/projects"))["projects"]
        except SignInRequired:
            return to_sign_in(request)
        except ApiCallError as exc:
            if exc.status == 404:
                not_found_page(dashboard, session, "Project")
            else:
                error_page(dashboard, session, exc)
            return None

        state = {"listing": listing}
        content = page_frame(dashboard, f"{project['name']} deployments", session)

        async def reload() -> None:
            fresh = await run_action(lambda: session.get(f"/api/projects/{project_id}/deployments"))
            if fresh is not None:
                state["listing"] = fresh
                production_card.refresh()
                history.refresh()

        async def promote(deployment: dict[str, Any], rollback: bool) -> None:
            verb = "Roll back" if rollback else "Promote"
            # In the page, not in the history list (which is redrawn as deployments change).
            with content, ui.dialog() as dialog, ui.card():
                ui.label(f"{verb} to deployment #{deployment['number']}?").classes("font-bold")
                ui.label(
                    "The production alias serves it at once, without building. It then stays "
                    "pinned there: new production builds deploy at their own URLs until you "
                    "un-pin or promote another deployment."
                ).classes("text-sm text-grey-8 max-w-md")
                with ui.row().classes("w-full justify-end"):
                    ui.button("Cancel", on_click=lambda: dialog.submit(False)).props("flat")
                    ui.button(verb, on_click=lambda: dialog.submit(True)).props(
                        "unelevated color=primary data-testid=confirm-promote"
                    )
            if not await dialog:
                return
            await run_action(
                lambda: session.post(f"/api/deployments/{deployment['id']}/promote"),
                f"Production now serves deployment #{deployment['number']}",
            )
            await reload()

        async def unpin() -> None:
            await run_action(
                lambda: session.post(f"/api/projects/{project_id}/production/unpin"),
                "Production follows the newest deployment again",
            )
            await reload()

        async def redeploy(deployment: dict[str, Any]) -> None:
            accepted = await run_action(
                lambda: session.post(f"/api/builds/{deployment['build_id']}/redeploy")
            )
            if accepted:
                ui.notify(f"Redeploying commit {short_sha(deployment['commit_sha'])}")
                ui.navigate.to(f"/builds/{accepted['build_id']}")

        @ui.refreshable
        def production_card() -> None:
            production = state["listing"]["production"]
            deployments = state["listing"]["deployments"]
            numbers = {d["id"]: d["number"] for d in deployments}
            serving = production.get("deployment_id")
            newest = production.get("following_deployment_id")
            with ui.card().classes("w-full gap-2").props("data-testid=production"):
                with ui.row().classes("w-full items-center gap-3"):
                    ui.label("Production").classes("text-lg font-bold")
                    link_out(production["url"], production["url"]).props(
                        "data-testid=production-url"
                    )
                    ui.space()
                    if production["pinned"]:
                        ui.badge("pinned", color="orange-8").props("data-testid=pinned-badge")
                    else:
                        ui.badge("follows newest", color="green-7").props(
                            "data-testid=following-badge"
                        )
                if serving is None:
                    ui.label("Nothing is deployed to production yet.").classes("text-grey-8")
                else:
                    ui.label(f"Serves deployment #{numbers.get(serving, '?')} ({serving}).").props(
                        "data-testid=production-serves"
                    )
                if production["pinned"]:
                    text = (
                        "Pinned: production was promoted by hand and stays on this deployment. "
                        "New production builds deploy at their own URLs and do not take the "
                        "production alias until you un-pin it or promote another deployment."
                    )
                    if newest and newest != serving:
                        text += (
                            f" The newest production deployment, #{numbers.get(newest, '?')}, "
                            "is not served."
                        )
                    ui.label(text).classes("text-orange-10").props("data-testid=pinned-note")
                    if Action.DEPLOYMENT_PROMOTE in allowed:
                        ui.button(
                            "Un-pin: follow the newest production deployment",
                            icon="push_pin",
                            on_click=unpin,
                        ).props("outline data-testid=unpin")
                else:
                    ui.label(
                        "Each new successful production build takes the production alias."
                    ).classes("text-grey-8")

        @ui.refreshable
        def history() -> None:
            production = state["listing"]["production"]
            deployments = state["listing"]["deployments"]
            serving_number = next(
                (d["number"] for d in deployments if d["id"] == production.get("deployment_id")),
                None,
            )
            if not deployments:
                ui.label("No deployments yet.").classes("text-grey-8")
            for deployment in deployments:
                with (
                    ui.card()
                    .classes("w-full q-py-sm")
                    .props(
                        f"flat bordered data-testid=deployment data-number={deployment['number']}"
                    ),
                    ui.row().classes("w-full items-center no-wrap gap-4"),
                ):
                    ui.label(f"#{deployment['number']}").classes("text-lg font-bold w-12")
                    with ui.column().classes("gap-0 grow min-w-0"):
                        with ui.row().classes("items-center gap-2 text-sm"):
                            ui.link(
                                short_sha(deployment.get("commit_sha")),
                                f"/builds/{deployment['build_id']}",
                            ).classes("gb-mono")
                            ui.label(first_line(deployment.get("commit_message"))).classes(
                                "ellipsis"
                            )
                            ui.label(deployment.get("branch") or "").classes("gb-mono text-grey-7")
                        link_out(deployment["url"], deployment["url"]).classes("text-sm")
                        ui.label(
                            f"{format_time(deployment['created_at'])} "
                            f"({format_ago(deployment['created_at'])})"
                        ).classes("text-grey-7 text-xs")
                    if deployment["is_production_alias"]:
                        ui.badge("production", color="green-7").props("data-testid=is-production")
                    elif Action.DEPLOYMENT_PROMOTE in allowed:
                        rollback = serving_number is not None and (
                            deployment["number"] < serving_number
                        )
                        ui.button(
                            "Roll back here" if rollback else "Promote",
                            icon="history" if rollback else "upgrade",
                            on_click=lambda d=deployment, r=rollback: promote(d, r),
                        ).props("outline dense data-testid=promote")
                    if Action.DEPLOYMENT_REDEPLOY in allowed and deployment.get("commit_sha"):
                        ui.button(
                            "Redeploy",
                            icon="rocket_launch",
                            on_click=lambda d=deployment: redeploy(d),
                        ).props("flat dense data-testid=redeploy")

        with content:
            with ui.row().classes("w-full items-center gap-4"):
                ui.label(project["name"]).classes("text-2xl font-bold")
                ui.label(project["repo_url"]).classes("gb-mono text-grey-7 text-sm")
                ui.space()
                ui.link("Builds", f"/builds?project={project['id']}")
                ui.link("Analytics", f"/projects/{project['id']}/analytics")
            production_card()
            scheduling_card(session, project, readable, Action.PROJECT_UPDATE in allowed)
            ui.label("Deployments").classes("text-lg font-bold")
            with ui.column().classes("w-full gap-2"):
                history()

        await ui.context.client.connected()
        watch = dashboard.live.watch(projects=[project["id"]])
        pending: dict[str, asyncio.Task[None] | None] = {"task": None}

        async def reload_soon() -> None:
            await asyncio.sleep(RELOAD_DELAY_SECONDS)
            pending["task"] = None
            await reload()

        async def follow() -> None:
            with watch:
                while True:
                    event = await watch.queue.get()
                    relevant = isinstance(event, DeploymentStatusChanged) or (
                        isinstance(event, BuildStatusChanged)
                        and event.state.value in FINISHED_STATES
                    )
                    if relevant and pending["task"] is None:
                        pending["task"] = background_tasks.create(
                            reload_soon(), name="deployments-reload", context=content
                        )

        task = background_tasks.create(follow(), name="deployments-live", context=content)
        # Deployments made between reading the list and watching.
        pending["task"] = background_tasks.create(
            reload_soon(), name="deployments-reload", context=content
        )
        ui.context.client.on_delete(task.cancel)
        return None
