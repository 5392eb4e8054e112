"""The build page: the build view with the buttons the user's role allows (cancel, rebuild,
redeploy, share) and the share-link dialog."""

from __future__ import annotations

from typing import Any

from fastapi import Request
from nicegui import background_tasks, ui

from gobuild.platform.auth.permissions import Action, Principal, ProjectRole, allowed_actions
from gobuild.ui.context import Dashboard
from gobuild.ui.display_formats import format_time
from gobuild.ui.gateway_api import ApiCallError
from gobuild.ui.pages.build_view import BuildView
from gobuild.ui.pages.frame import (
    ACTIVE_STATES,
    copy_field,
    error_page,
    is_path_id,
    not_found_page,
    page_frame,
    run_action,
    to_sign_in,
)
from gobuild.ui.user_session import SignInRequired, UserSession

SHARE_EXPIRIES = {3600: "1 hour", 86400: "1 day", 7 * 86400: "7 days", 30 * 86400: "30 days"}


def principal_from_me(me: dict[str, Any]) -> Principal:
    """Who the user is, as `/api/me` says, to ask the permission module which buttons to show
    (the gateway still decides every action)."""
    roles = {}
    for project_id, role in (me.get("projects") or {}).items():
        try:
            roles[project_id] = ProjectRole(role)
        except ValueError:
            continue
    scopes = me.get("scopes")
    return Principal(
        kind=me.get("kind", "user"),
        username=me.get("username", ""),
        is_admin=bool(me.get("is_admin")),
        project_roles=roles,
        scopes=frozenset(scopes) if scopes is not None else None,
    )


async def allowed_in_project(session: UserSession, project_id: str) -> frozenset[Action]:
    return allowed_actions(principal_from_me(await session.get("/api/me")), project_id)


def register(dashboard: Dashboard) -> None:
    @ui.page("/builds/{build_id}")
    async def build_page(request: Request, build_id: str) -> Any:
        session = dashboard.session()
        if not session.signed_in:
            return to_sign_in(request)
        if not is_path_id(build_id):
            not_found_page(dashboard, session, "Build")
            return None
        try:
            build = await session.get(f"/api/builds/{build_id}")
            project = await session.get(f"/api/projects/{build['project_id']}")
            allowed = await allowed_in_project(session, build["project_id"])
        except SignInRequired:
            return to_sign_in(request)
        except ApiCallError as exc:
            if exc.status == 404:
                not_found_page(dashboard, session, "Build")
            else:
                error_page(dashboard, session, exc)
            return None

        content = page_frame(dashboard, f"{project['name']} #{build.get('number') or ''}", session)

        async def reload_build() -> dict[str, Any] | None:
            return await run_action(lambda: session.get(f"/api/builds/{build_id}"))

        def actions() -> None:
            build_actions(session, view.build, allowed, content)

        view = BuildView(
            dashboard,
            build,
            project_name=project["name"],
            open_log=lambda: session.stream(f"/api/builds/{build_id}/logs"),
            reload_build=reload_build,
            log_download_url=f"/builds/{build_id}/log.txt",
            artifact_url=f"/builds/{build_id}/artifact",
            actions=actions,
            load_resources=lambda: session.get(f"/api/builds/{build_id}/resources"),
        )
        with content:
            with ui.row().classes("text-sm gap-2"):
                ui.link("Builds", "/builds")
                ui.label("/")
                ui.link(project["name"], f"/projects/{project['id']}")
            view.render()

        await ui.context.client.connected()
        task = background_tasks.create(view.follow(), name="build-live", context=content)
        ui.context.client.on_delete(task.cancel)
        return None


def build_actions(
    session: UserSession, build: dict[str, Any], allowed: frozenset[Action], page: ui.element
) -> None:
    """The buttons the user's role allows; dialogs open in `page` (the header is redrawn as
    the build changes)."""
    build_id = build["id"]
    if Action.BUILD_CANCEL in allowed and build["state"] in ACTIVE_STATES:
        ui.button(
            "Cancel",
            icon="stop",
            on_click=lambda: run_action(
                lambda: session.post(f"/api/builds/{build_id}/cancel"), "Cancelling the build"
            ),
        ).props("outline color=negative data-testid=cancel")
    if Action.BUILD_CREATE in allowed and build.get("branch"):

        async def rebuild() -> None:
            accepted = await run_action(
                lambda: session.post(
                    f"/api/projects/{build['project_id']}/builds", {"branch": build["branch"]}
                )
            )
            if accepted:
                ui.navigate.to(f"/builds/{accepted['build_id']}")

        ui.button("Rebuild", icon="replay", on_click=rebuild).props(
            "outline data-testid=rebuild"
        ).tooltip("Build the newest commit of the branch")
    if Action.DEPLOYMENT_REDEPLOY in allowed and build.get("commit_sha"):

        async def redeploy() -> None:
            accepted = await run_action(lambda: session.post(f"/api/builds/{build_id}/redeploy"))
            if accepted:
                ui.navigate.to(f"/builds/{accepted['build_id']}")

        ui.button("Redeploy", icon="rocket_launch", on_click=redeploy).props(
            "outline data-testid=redeploy"
        ).tooltip("Build this commit again as a new build")
    if Action.SHARE_CREATE in allowed:
        ui.button(
            "Share", icon="share", on_click=lambda: share_dialog(session, build_id, page)
        ).props("unelevated color=primary data-testid=share")


async def share_dialog(session: UserSession, build_id: str, page: ui.element) -> None:
    """Create a read-only link to this build with a chosen expiry; list and revoke links."""
    shown: dict[str, list[dict[str, Any]]] = {"links": []}

    async def load_links() -> None:
        found = await run_action(lambda: session.get("/api/shares", build_id=build_id))
        shown["links"] = found["links"] if found else []
        links.refresh()

    @ui.refreshable
    def links() -> None:
        if not shown["links"]:
            ui.label("No live links.").classes("text-grey-7 text-sm")
        for link in shown["links"]:
            with (
                ui.row()
                .classes("w-full items-center gap-2 text-sm")
                .props(f"data-testid=share-link data-link-id={link['id']}")
            ):
                ui.label(f"by {link['created_by']}, expires {format_time(link['expires_at'])}")
                ui.space()

                async def revoke(link_id: str = link["id"]) -> None:
                    await run_action(
                        lambda: session.delete(f"/api/shares/{link_id}"), "Link revoked"
                    )
                    await load_links()

                ui.button("Revoke", on_click=revoke).props(
                    "flat dense color=negative data-testid=revoke-share"
                )

    with page, ui.dialog() as dialog, ui.card().classes("w-[40rem] max-w-full gap-3"):
        ui.label("Share this build").classes("text-xl font-bold")
        ui.label(
            "Whoever has the link sees this build read-only (state, steps, log, artifact), "
            "without an account, until it expires or you revoke it."
        ).classes("text-grey-8 text-sm")
        with ui.row().classes("w-full items-center gap-2"):
            expiry = ui.select(SHARE_EXPIRIES, value=86400, label="Expires after").classes("w-40")
            expiry.props("data-testid=share-expiry")

            async def create() -> None:
                link = await run_action(
                    lambda: session.post(
                        f"/api/builds/{build_id}/share", {"expires_in": expiry.value}
                    )
                )
                if link is None:
                    return
                created.clear()
                with created:
                    copy_field("Share link", link["url"], "share-url")
                await load_links()

            ui.button("Create link", on_click=create).props(
                "unelevated color=primary data-testid=create-share"
            )
        created = ui.column().classes("w-full")
        ui.separator()
        ui.label("Live links").classes("font-bold")
        with ui.column().classes("w-full gap-1"):
            links()
        with ui.row().classes("w-full justify-end"):
            ui.button("Close", on_click=dialog.close).props("flat")
    dialog.open()
    await load_links()
