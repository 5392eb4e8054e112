"""Signing in and out: a password form, GitHub / GitLab through the gateway's flow (which comes
back to `/?code=...`), and the landing page that trades that code for tokens."""

from __future__ import annotations

from fastapi import Request
from fastapi.responses import RedirectResponse
from nicegui import app, ui

from gobuild.ui.context import Dashboard
from gobuild.ui.gateway_api import ApiCallError
from gobuild.ui.pages.frame import page_frame, safe_next

# Where a GitHub / GitLab sign-in goes once the code is traded (kept in the browser session).
AFTER_SIGN_IN_KEY = "after_sign_in"
PROVIDER_NAMES = {"github": "GitHub", "gitlab": "GitLab"}


def register(dashboard: Dashboard) -> None:
    @ui.page("/")
    async def home(request: Request, code: str | None = None) -> RedirectResponse | None:
        session = dashboard.session()
        if code:
            target = safe_next(app.storage.user.pop(AFTER_SIGN_IN_KEY, None))
            try:
                await session.sign_in_with_code(code)
            except ApiCallError as exc:
                failed_page(dashboard, exc.message)
                return None
            return RedirectResponse(target, status_code=303)
        return RedirectResponse("/builds" if session.signed_in else "/sign-in", status_code=303)

    @ui.page("/sign-in")
    async def sign_in(next: str | None = None) -> None:
        target = safe_next(next)
        # A GitHub / GitLab sign-in leaves the dashboard; its landing finds the target here.
        app.storage.user[AFTER_SIGN_IN_KEY] = target
        session = dashboard.session()
        content = page_frame(dashboard, "Sign in", None)
        with content.classes("items-center"), ui.card().classes("w-96 q-pa-lg gap-3"):
            ui.label("Sign in to GoBuild").classes("text-xl font-bold")
            username = ui.input("Username").props("outlined autofocus").classes("w-full")
            username.props("data-testid=username")
            password = ui.input("Password", password=True).props("outlined").classes("w-full")
            password.props("data-testid=password")
            problem = ui.label("").classes("text-negative").props("data-testid=sign-in-error")
            problem.visible = False

            async def submit() -> None:
                problem.visible = False
                try:
                    await session.sign_in_with_password(username.value.strip(), password.value)
                except ApiCallError as exc:
                    problem.set_text(exc.message)
                    problem.visible = True
                    return
                ui.navigate.to(target)

            password.on("keydown.enter", submit)
            ui.button("Sign in", on_click=submit).props("unelevated color=primary").classes(
                "w-full"
            ).props("data-testid=sign-in")
            if dashboard.providers:
                ui.separator()
            for provider in dashboard.providers:
                ui.button(
                    f"Sign in with {PROVIDER_NAMES.get(provider, provider)}",
                    icon="login",
                ).props(f'outline tag=a href="{dashboard.sign_in_link(provider)}"').classes(
                    "w-full"
                ).props(f"data-testid=sign-in-{provider}")


def failed_page(dashboard: Dashboard, message: str) -> None:
    content = page_frame(dashboard, "Sign-in failed", None)
    with content, ui.card().classes("w-full"):
        ui.label("Sign-in failed").classes("text-xl font-bold")
        ui.label(message).classes("text-grey-8")
        ui.link("Try again", "/sign-in")
