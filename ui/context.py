"""What every page of one dashboard process reaches: its settings, its gateway client, its live
events and the per-browser-session refresh locks."""

from __future__ import annotations

from dataclasses import dataclass

from nicegui import app

from gobuild.platform.config import Settings
from gobuild.ui.gateway_api import GatewayApi
from gobuild.ui.live_events import LiveEvents
from gobuild.ui.user_session import SessionLocks, UserSession


@dataclass
class Dashboard:
    settings: Settings
    api: GatewayApi
    live: LiveEvents
    locks: SessionLocks
    # Sign-in providers the gateway offers (GitHub, GitLab), from the shared settings.
    providers: list[str]

    def session(self) -> UserSession:
        """The sign-in of the browser session of the current request or page."""
        return UserSession(
            self.api, app.storage.user, self.locks.lock(str(app.storage.browser["id"]))
        )

    def sign_in_link(self, provider: str) -> str:
        """Where the browser starts signing in with a provider: the gateway's flow, which
        comes back to the dashboard with a one-time code."""
        return f"{self.settings.gateway_public_url}/auth/{provider}/login"
