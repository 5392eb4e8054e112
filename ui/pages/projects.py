"""The projects page: the user's projects with their production URL and newest build (live), and
the "New project" form that shows the webhook URL and secret once, with the setup steps."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import Request
from nicegui import background_tasks, ui

from gobuild.platform.events import BuildStatusChanged
from gobuild.ui.context import Dashboard
from gobuild.ui.gateway_api import ApiCallError
from gobuild.ui.pages.frame import (
    copy_field,
    error_page,
    link_out,
    page_frame,
    run_action,
    state_badge,
    to_sign_in,
)
from gobuild.ui.user_session import SignInRequired, UserSession

PROVIDERS = {"github": "GitHub", "gitlab": "GitLab", "git": "Other git server"}
SETUP_STEPS = {
    "github": [
        "In the repository on GitHub, open Settings → Webhooks → Add webhook.",
        "Payload URL: the webhook URL above.",
        "Content type: application/json.",
        "Secret: the webhook secret above.",
        "Which events: Just the push event. Then Add webhook.",
    ],
    "gitlab": [
        "In the project on GitLab, open Settings → Webhooks → Add new webhook.",
        "URL: the webhook URL above.",
        "Secret token: the webhook secret above.",
        "Trigger: Push events (and Tag push events if the project builds tags).",
        "Add webhook.",
    ],
    "git": [
        "Send signed push deliveries in GitHub's format to the webhook URL above "
        "(X-Hub-Signature-256 with the secret), or build with the API: "
        "POST /api/projects/<name>/builds.",
    ],
}


async def newest_builds(session: UserSession, projects: list[dict[str, Any]]) -> dict[str, Any]:
    """The newest build of each project (None for a project without builds)."""

    async def newest(project_id: str) -> Any:
        found = await session.get(f"/api/projects/{project_id}/builds", limit=1)
        return found["builds"][0] if found["builds"] else None

    found = await asyncio.gather(*(newest(p["id"]) for p in projects))
    return {p["id"]: build for p, build in zip(projects, found, strict=True)}


def register(dashboard: Dashboard) -> None:
    @ui.page("/projects")
    async def projects_page(request: Request) -> Any:
        session = dashboard.session()
        if not session.signed_in:
            return to_sign_in(request)
        try:
            projects = (await session.get("/api/projects"))["projects"]
            newest = await newest_builds(session, projects)
        except SignInRequired:
            return to_sign_in(request)
        except ApiCallError as exc:
            error_page(dashboard, session, exc)
            return None

        content = page_frame(dashboard, "Projects", session)
        badges: dict[str, ui.element] = {}

        @ui.refreshable
        def project_list() -> None:
            if not projects:
                ui.label("No projects yet. Create one to connect a repository.").classes(
                    "text-grey-8"
                )
            for project in projects:
                build = newest.get(project["id"])
                with ui.card().classes("w-full").props(f"data-testid=project-{project['name']}"):
                    with ui.row().classes("w-full items-center gap-4"):
                        ui.link(project["name"], f"/projects/{project['id']}").classes(
                            "text-lg font-bold"
                        )
                        ui.label(project["repo_url"]).classes("text-grey-7 gb-mono text-sm")
                        ui.space()
                        if project.get("role"):
                            ui.badge(project["role"], color="grey-7").props("outline")
                    with ui.row().classes("w-full items-center gap-4 text-sm"):
                        ui.label("Production:")
                        link_out(project["production_url"], project["production_url"])
                        ui.space()
                        ui.label("Newest build:")
                        holder = ui.row().classes("items-center gap-2")
                        badges[project["id"]] = holder
                        with holder:
                            newest_build(build)
                    with ui.row().classes("gap-4 text-sm"):
                        ui.link("Deployments", f"/projects/{project['id']}")
                        ui.link("Builds", f"/builds?project={project['id']}")
                        ui.link("Analytics", f"/projects/{project['id']}/analytics")

        with content:
            with ui.row().classes("w-full items-center"):
                ui.label("Projects").classes("text-2xl font-bold")
                ui.space()
                ui.button(
                    "New project", icon="add", on_click=lambda: new_project_dialog(session)
                ).props("unelevated color=primary").props("data-testid=new-project")
            project_list()

        await ui.context.client.connected()
        watch = dashboard.live.watch(projects=[p["id"] for p in projects])

        async def follow() -> None:
            with watch:
                while True:
                    event = await watch.queue.get()
                    if isinstance(event, BuildStatusChanged) and event.project_id in badges:
                        found = await run_action(
                            lambda event=event: session.get(f"/api/builds/{event.build_id}")
                        )
                        if found is not None:
                            newest[event.project_id] = found
                            holder = badges[event.project_id]
                            holder.clear()
                            with holder:
                                newest_build(found)

        task = background_tasks.create(follow(), name="projects-live", context=content)
        ui.context.client.on_delete(task.cancel)
        return None


def newest_build(build: dict[str, Any] | None) -> None:
    if build is None:
        ui.label("none yet").classes("text-grey-7")
        return
    state_badge(build["state"])
    ui.link(f"#{build.get('number') or '?'}", f"/builds/{build['id']}")


def new_project_dialog(session: UserSession) -> None:
    with ui.dialog() as dialog, ui.card().classes("w-[40rem] max-w-full gap-3"):
        ui.label("New project").classes("text-xl font-bold")
        form = ui.column().classes("w-full gap-2")
        with form:
            name = ui.input("Name (becomes <name>.<domain>)").props("outlined").classes("w-full")
            name.props("data-testid=project-name")
            repo = ui.input("Repository URL").props("outlined").classes("w-full")
            repo.props("data-testid=project-repo")
            provider = ui.select(PROVIDERS, value="github", label="Provider").props("outlined")
            provider.classes("w-full").props("data-testid=project-provider")
            branch = ui.input("Production branch", value="main").props("outlined")
            branch.classes("w-full").props("data-testid=project-branch")
        result = ui.column().classes("w-full gap-2")

        async def create() -> None:
            body = {
                "name": name.value.strip(),
                "repo_url": repo.value.strip(),
                "provider": provider.value,
                "production_branch": branch.value.strip() or "main",
            }
            created = await run_action(lambda: session.post("/api/projects", body))
            if created is None:
                return
            form.visible = False
            create_button.visible = False
            cancel_button.visible = False
            with result:
                ui.label(f"Project {created['name']} is ready.").classes("font-bold")
                ui.label(
                    "The webhook secret is shown only now: copy it into the provider's "
                    "webhook form."
                ).classes("text-warning")
                copy_field("Webhook URL", created["webhook_url"], "webhook-url")
                copy_field("Webhook secret", created["webhook_secret"], "webhook-secret")
                ui.label("Set up the webhook").classes("font-bold q-mt-sm")
                with ui.element("ol").classes("list-decimal q-pl-lg"):
                    for step in SETUP_STEPS.get(created["provider"], []):
                        with ui.element("li").classes("q-mb-xs"):
                            ui.label(step)
                ui.button("Done", on_click=lambda: ui.navigate.to("/projects")).props(
                    "unelevated color=primary"
                )

        with ui.row().classes("w-full justify-end"):
            cancel_button = ui.button("Cancel", on_click=dialog.close).props("flat")
            create_button = ui.button("Create", on_click=create).props("unelevated color=primary")
            create_button.props("data-testid=create-project")
    dialog.open()
