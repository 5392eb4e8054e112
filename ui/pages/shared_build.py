"""The public, read-only page of a share link: that one build (state, steps, log, live while it
runs, artifact), nothing else of the instance and no buttons; a revoked or expired link gets a
page that says which."""

from __future__ import annotations

from typing import Any

from nicegui import background_tasks, ui

from gobuild.ui.context import Dashboard
from gobuild.ui.gateway_api import ApiCallError
from gobuild.ui.pages.build_view import BuildView
from gobuild.ui.pages.frame import is_share_token, page_frame

GONE_TEXT = {
    "share link revoked": ("This link was revoked", "Whoever shared it has withdrawn it."),
    "share link expired": ("This link has expired", "Share links work for a limited time."),
}


def register(dashboard: Dashboard) -> None:
    @ui.page("/share/{token}")
    async def shared_page(token: str) -> None:
        path = f"/api/shared/{token}"
        try:
            if not is_share_token(token):
                raise ApiCallError(404, "share link not found")
            build = (await dashboard.api.call("GET", path)).json()
        except ApiCallError as exc:
            link_unavailable_page(dashboard, exc)
            return
        content = page_frame(
            dashboard, f"{build['project_name']} #{build.get('number') or ''}", None
        )

        async def load_json(url: str) -> dict[str, Any] | None:
            try:
                return (await dashboard.api.call("GET", url)).json()
            except ApiCallError:
                return None

        async def reload_build() -> dict[str, Any] | None:
            return await load_json(path)

        view = BuildView(
            dashboard,
            build,
            project_name=build["project_name"],
            open_log=lambda: dashboard.api.stream(f"{path}/logs"),
            reload_build=reload_build,
            log_download_url=f"/share/{token}/log.txt",
            artifact_url=f"/share/{token}/artifact",
            load_resources=lambda: load_json(f"{path}/resources"),
        )
        with content:
            ui.label("Shared build (read-only)").classes("text-grey-7 text-sm").props(
                "data-testid=shared-banner"
            )
            view.render()
        await ui.context.client.connected()
        task = background_tasks.create(view.follow(), name="shared-build-live", context=content)
        ui.context.client.on_delete(task.cancel)


def link_unavailable_page(dashboard: Dashboard, error: ApiCallError) -> None:
    """Revoked, expired, or not a share link of this instance (all say so, nothing more)."""
    title, detail = GONE_TEXT.get(
        error.error,
        ("Share link not found", "Check the link, or ask whoever shared it for a new one."),
    )
    if error.status not in (404, 410):
        title, detail = "The build cannot be shown now", error.message
    ui.status_code(error.status if error.status in (404, 410) else 503)
    content = page_frame(dashboard, title, None)
    with content, ui.card().classes("w-full"):
        ui.label(title).classes("text-xl font-bold").props("data-testid=share-unavailable")
        ui.label(detail).classes("text-grey-8")
