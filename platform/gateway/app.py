"""The API gateway: public REST API, webhooks, sign-in, and deployments served by host name."""

from __future__ import annotations

import logging

import httpx
from quart import Quart
from quart_auth import QuartAuth

from gobuild.platform.auth.service import create_auth_service
from gobuild.platform.auth.users import INITIAL_ADMIN_USERNAME, UserStore
from gobuild.platform.bus import EventProducer
from gobuild.platform.config import AuthSettings, GatewaySettings, RetentionSettings, Settings
from gobuild.platform.gateway.access import authenticate_request
from gobuild.platform.gateway.context import EXTENSION_KEY, GatewayContext
from gobuild.platform.gateway.deployments import register_deployment_host
from gobuild.platform.gateway.errors import register_error_handlers
from gobuild.platform.gateway.openapi import SESSION_COOKIE, install_openapi
from gobuild.platform.gateway.ratelimits import add_rate_limit_headers
from gobuild.platform.gateway.routes import (
    auth,
    builds,
    caches,
    deployments,
    health,
    home,
    keys,
    members,
    notifications,
    oauth,
    project_settings,
    projects,
    retention,
    scheduler,
    shares,
    users,
    webhooks,
)
from gobuild.platform.request_json import StrictJsonRequest
from gobuild.platform.storage_client import require_internal_token
from gobuild.platform.stores.connection import connect_redis

log = logging.getLogger(__name__)


def create_app(
    settings: Settings,
    *,
    auth_settings: AuthSettings | None = None,
    gateway_settings: GatewaySettings | None = None,
    retention_settings: RetentionSettings | None = None,
) -> Quart:
    require_internal_token(settings, "the gateway")  # storage answers nothing without it
    auth_settings = auth_settings or AuthSettings()
    gateway_settings = gateway_settings or GatewaySettings()
    retention_settings = retention_settings or RetentionSettings()
    app = Quart("gobuild.gateway")
    app.request_class = StrictJsonRequest  # bad UTF-8 or absurd nesting: 400, not 500
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.config["BODY_TIMEOUT"] = 60
    app.config["RESPONSE_TIMEOUT"] = None
    install_openapi(app)
    QuartAuth(
        app,
        cookie_name=SESSION_COOKIE,
        cookie_samesite="Lax",
        cookie_secure=settings.gateway_public_url.startswith("https://"),
        duration=auth_settings.session_ttl_seconds,
    )
    register_error_handlers(app)
    # Deployment hosts are answered first; everything else passes the authentication layer.
    register_deployment_host(app)
    app.before_request(authenticate_request)
    app.after_request(add_rate_limit_headers)
    for module in (health, webhooks, auth, users, keys, projects, members, builds, oauth):
        app.register_blueprint(module.blueprint)
    for module in (home, deployments, shares, notifications, retention, project_settings):
        app.register_blueprint(module.blueprint)
    app.register_blueprint(caches.blueprint)
    app.register_blueprint(scheduler.blueprint)

    @app.before_serving
    async def _start() -> None:
        redis = connect_redis(settings.redis_url)
        auth_service = await create_auth_service(redis, settings, auth_settings)
        app.secret_key = auth_service.cookie_secret  # signs the browser session cookie
        await _ensure_initial_admin(auth_service.users, auth_settings)
        producer = EventProducer(settings, client_id="gateway")
        await producer.start()
        app.extensions[EXTENSION_KEY] = GatewayContext(
            settings=settings,
            gateway_settings=gateway_settings,
            redis=redis,
            producer=producer,
            http=httpx.AsyncClient(timeout=httpx.Timeout(10.0)),
            auth=auth_service,
            retention_settings=retention_settings,
        )
        log.info("gateway ready on port %s", settings.gateway_port)

    @app.after_serving
    async def _stop() -> None:
        ctx: GatewayContext | None = app.extensions.pop(EXTENSION_KEY, None)
        if ctx is None:
            return
        await ctx.http.aclose()
        await ctx.producer.stop()
        await ctx.redis.aclose()

    return app


async def _ensure_initial_admin(users: UserStore, auth_settings: AuthSettings) -> None:
    """Create the first admin user when there is none; a generated password is logged once."""
    password = await users.ensure_initial_admin(auth_settings)
    if password is None:
        return
    if auth_settings.initial_admin_password:
        log.info(
            "created the first admin user %r with GOBUILD_INITIAL_ADMIN_PASSWORD",
            INITIAL_ADMIN_USERNAME,
        )
        return
    log.warning(
        "created the first admin user %r with password %s (shown once: sign in and change "
        "it with POST /api/me/password)",
        INITIAL_ADMIN_USERNAME,
        password,
    )
