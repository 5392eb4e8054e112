"""The API gateway: public REST API, webhooks, and deployments served by host name."""

from __future__ import annotations

import logging

import httpx
from quart import Quart
from quart_schema import HttpSecurityScheme, Info, QuartSchema

from gobuild.platform.bus import EventProducer
from gobuild.platform.config import Settings
from gobuild.platform.gateway.context import EXTENSION_KEY, GatewayContext
from gobuild.platform.gateway.deployments import register_deployment_host
from gobuild.platform.gateway.errors import register_error_handlers
from gobuild.platform.gateway.routes import builds, health, projects, webhooks
from gobuild.platform.state import connect_redis

log = logging.getLogger(__name__)


def create_app(settings: Settings) -> Quart:
    app = Quart("gobuild.gateway")
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.config["BODY_TIMEOUT"] = 60
    app.config["RESPONSE_TIMEOUT"] = None
    QuartSchema(
        app,
        info=Info(title="GoBuild API", version="1"),
        security_schemes={
            "bearer": HttpSecurityScheme(scheme="bearer"),
            "basic": HttpSecurityScheme(scheme="basic"),
        },
        security=[{"bearer": []}, {"basic": []}],
    )
    register_error_handlers(app)
    register_deployment_host(app)
    for module in (health, webhooks, projects, builds):
        app.register_blueprint(module.blueprint)

    @app.before_serving
    async def _start() -> None:
        producer = EventProducer(settings, client_id="gateway")
        await producer.start()
        app.extensions[EXTENSION_KEY] = GatewayContext(
            settings=settings,
            redis=connect_redis(settings.redis_url),
            producer=producer,
            http=httpx.AsyncClient(timeout=httpx.Timeout(10.0)),
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
