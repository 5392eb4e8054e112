"""What every page shares: the header with navigation and sign-out, state badges, the page for
what the user may not see (the same as for what does not exist), and how actions report
errors and ended sign-ins."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import TypeVar
from urllib.parse import quote, urlsplit

from fastapi import Request
from fastapi.responses import RedirectResponse
from nicegui import ui

from gobuild.ui.context import Dashboard
from gobuild.ui.gateway_api import ApiCallError
from gobuild.ui.user_session import SignInRequired, UserSession

T = TypeVar("T")

# What may stand for an id in a dashboard URL (build and project ids, project names) and what a
# share token looks like (a JWT); anything else is "not found" without asking the gateway.
_PATH_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_SHARE_TOKEN = re.compile(r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$")
MAX_SHARE_TOKEN_LENGTH = 2048


def is_path_id(value: str) -> bool:
    return bool(_PATH_ID.match(value))


def is_share_token(value: str) -> bool:
    return len(value) <= MAX_SHARE_TOKEN_LENGTH and bool(_SHARE_TOKEN.match(value))


STATE_COLOURS = {
    "queued": "grey-6",
    "dispatched": "blue-grey-5",
    "running": "blue-6",
    "succeeded": "green-7",
    "failed": "red-7",
    "cancelled": "orange-8",
    "timed_out": "deep-orange-8",
}
FINISHED_STATES = frozenset({"succeeded", "failed", "cancelled", "timed_out"})
ACTIVE_STATES = frozenset({"queued", "dispatched", "running"})


def safe_next(path: str | None) -> str:
    """A path on this dashboard to go to after signing in (never another site)."""
    if not path or not path.startswith("/") or path.startswith("//") or "\\" in path:
        return "/builds"
    parts = urlsplit(path)
    if parts.scheme or parts.netloc:
        return "/builds"
    return path


def wanted_path(request: Request) -> str:
    query = f"?{request.url.query}" if request.url.query else ""
    return request.url.path + query


def sign_in_url(next_path: str) -> str:
    return f"/sign-in?next={quote(safe_next(next_path), safe='')}"


def to_sign_in(request: Request) -> RedirectResponse:
    """Send a browser whose sign-in ended to the sign-in page, and afterwards back here."""
    return RedirectResponse(sign_in_url(wanted_path(request)), status_code=303)


def page_frame(dashboard: Dashboard, title: str, session: UserSession | None) -> ui.column:
    """The header (navigation, user, sign-out) and the page's content column."""
    ui.page_title(f"{title} · GoBuild")
    ui.query("body").classes("bg-grey-1")
    with ui.header().classes("items-center bg-grey-10 text-white q-px-md q-py-sm gap-6"):
        ui.link("GoBuild", "/builds" if session else "/").classes(
            "text-lg font-bold text-white no-underline"
        )
        if session is not None:
            ui.link("Builds", "/builds").classes("text-white no-underline").props(
                "data-testid=nav-builds"
            )
            ui.link("Projects", "/projects").classes("text-white no-underline").props(
                "data-testid=nav-projects"
            )
            ui.space()
            ui.label(session.username).classes("text-grey-4").props("data-testid=signed-in-user")

            async def sign_out() -> None:
                await session.sign_out()
                ui.navigate.to("/sign-in")

            ui.button("Sign out", on_click=sign_out).props("flat dense color=white").props(
                "data-testid=sign-out"
            )
    return ui.column().classes("w-full max-w-6xl mx-auto q-pa-md gap-4")


def state_badge(state: str) -> ui.badge:
    return (
        ui.badge(state.replace("_", " "), color=STATE_COLOURS.get(state, "grey-6"))
        .classes("q-px-sm q-py-xs text-sm gb-state")
        .props(f"data-state={state}")
    )


def not_found_page(dashboard: Dashboard, session: UserSession | None, what: str) -> None:
    """The page for a build or project that does not exist or that the user may not see:
    the same in both cases."""
    ui.status_code(404)
    content = page_frame(dashboard, "Not found", session)
    with content, ui.card().classes("w-full"):
        ui.label(f"{what} not found").classes("text-xl font-bold").props("data-testid=not-found")
        ui.label(
            f"There is no such {what.lower()}, or it is not shared with you. "
            "Check the link, or ask the project's owner to add you."
        ).classes("text-grey-8")
        ui.link("Back to builds", "/builds")


def error_page(dashboard: Dashboard, session: UserSession | None, error: ApiCallError) -> None:
    content = page_frame(dashboard, "Error", session)
    with content, ui.card().classes("w-full"):
        ui.label("Something went wrong").classes("text-xl font-bold")
        ui.label(error.message).classes("text-grey-8")


async def run_action(action: Callable[[], Awaitable[T]], done: str | None = None) -> T | None:
    """Run a button's action: errors become a notification, an ended sign-in goes to the
    sign-in page (and back here afterwards)."""
    try:
        result = await action()
    except SignInRequired:
        path = await ui.run_javascript("return location.pathname + location.search")
        ui.navigate.to(sign_in_url(str(path or "/builds")))
        return None
    except ApiCallError as exc:
        ui.notify(exc.message, type="negative", multi_line=True)
        return None
    if done:
        ui.notify(done, type="positive")
    return result


def copy_field(label: str, value: str, marker: str) -> None:
    """A read-only value with a copy button."""
    with ui.row().classes("w-full items-center no-wrap gap-2"):
        ui.input(label, value=value).props("readonly outlined dense").classes(
            "grow font-mono"
        ).props(f"data-testid={marker}")

        async def copy() -> None:
            ui.clipboard.write(value)
            ui.notify(f"{label} copied")

        ui.button(icon="content_copy", on_click=copy).props("flat dense").tooltip(f"Copy {label}")


def link_out(text: str, url: str) -> ui.link:
    """A link to a URL outside the dashboard (deployments), opened in a new tab."""
    return ui.link(text, url, new_tab=True).classes("font-mono break-all")
