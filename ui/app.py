"""The dashboard's app factory: pages registered on NiceGUI's app, the gateway client and the live
event consumer opened on startup and closed on shutdown."""

from __future__ import annotations

import hashlib
import hmac
import logging

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from nicegui import app, ui
from nicegui.storage import Storage

from gobuild.platform.auth.oauth import enabled_providers
from gobuild.platform.config import AuthSettings, Settings
from gobuild.ui.context import Dashboard
from gobuild.ui.downloads import register_downloads
from gobuild.ui.gateway_api import GatewayApi
from gobuild.ui.live_events import LiveEvents
from gobuild.ui.pages import (
    analytics,
    build_detail,
    builds,
    deployments,
    projects,
    shared_build,
    sign_in,
)
from gobuild.ui.styles import DASHBOARD_CSS
from gobuild.ui.user_session import SessionLocks

log = logging.getLogger(__name__)


class DashboardConfigError(RuntimeError):
    """The dashboard cannot start with these settings."""


def session_secret(settings: Settings) -> str:
    """The key that signs the dashboard's session cookie, derived from a secret every service
    of the installation already shares (so dashboards side by side accept each other's
    cookies) and never that secret itself."""
    base = settings.secret_key or settings.internal_token
    if not base:
        raise DashboardConfigError(
            "the dashboard needs GOBUILD_INTERNAL_TOKEN (or GOBUILD_SECRET_KEY) to sign its "
            "session cookies; `gobuild dev` sets it, docker compose reads it from .env"
        )
    return hmac.new(base.encode(), b"gobuild-dashboard-session", hashlib.sha256).hexdigest()


def create_app(settings: Settings) -> FastAPI:
    """Register the dashboard's pages and lifecycle on NiceGUI's app (one per process)."""
    session_secret(settings)  # fail now, not at the first request
    dashboard = Dashboard(
        settings=settings,
        api=GatewayApi(settings.gateway_api_url),
        live=LiveEvents(settings),
        locks=SessionLocks(),
        providers=enabled_providers(AuthSettings()),
    )
    # Each browser session's sign-in is kept server-side, in the data folder (not the page).
    storage_dir = settings.data_dir / "dashboard-sessions"
    storage_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    Storage.path = storage_dir

    async def start() -> None:
        await dashboard.api.start()
        await dashboard.live.start()
        log.info(
            "dashboard on port %s, gateway at %s", settings.dashboard_port, dashboard.api.base_url
        )

    async def stop() -> None:
        await dashboard.live.stop()
        await dashboard.api.stop()

    app.on_startup(start)
    app.on_shutdown(stop)
    ui.add_css(DASHBOARD_CSS, shared=True)
    for pages in (sign_in, projects, builds, build_detail, deployments, analytics, shared_build):
        pages.register(dashboard)
    register_downloads(app, dashboard)

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> JSONResponse:
        """Ready once the live events flow (the consumer joined its group)."""
        if not dashboard.live.joined.is_set():
            return JSONResponse({"status": "starting"}, status_code=503)
        return JSONResponse({"status": "ok"})

    return app


def run(settings: Settings) -> None:
    """Serve the dashboard until stopped."""
    create_app(settings)
    ui.run(
        host=settings.bind_host,
        port=settings.dashboard_port,
        title="GoBuild",
        favicon="🚀",
        storage_secret=session_secret(settings),
        session_middleware_kwargs={
            "https_only": settings.gateway_public_url.startswith("https://"),
            "same_site": "lax",
        },
        reload=False,
        show=False,
        uvicorn_logging_level="warning",
        reconnect_timeout=10.0,
    )
