"""The storage service: artifacts, build logs, deployment content and caches under `data_dir`.

`create_app(settings)` builds the Quart app; the `build-logs` consumer starts with the
server (`before_serving`) and stops with it. Every route but `/healthz` answers only requests
that carry the internal token; without a configured token the app refuses to be built.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from collections.abc import Awaitable, Callable

from quart import Quart, Response, request

from gobuild.platform.api_errors import error_response, register_error_handlers
from gobuild.platform.config import Settings
from gobuild.platform.storage import (
    artifact_routes,
    cache_routes,
    deployment_routes,
    log_routes,
)
from gobuild.platform.storage.archive import ArchiveLimits
from gobuild.platform.storage.artifacts import DEFAULT_MAX_ARTIFACT_BYTES, ArtifactStore
from gobuild.platform.storage.caches import CacheBlobs
from gobuild.platform.storage.deployments import DeploymentFiles
from gobuild.platform.storage.log_consumer import LogConsumer
from gobuild.platform.storage.logs import LogStore
from gobuild.platform.storage.services import EXTENSION_KEY, StorageServices
from gobuild.platform.storage_client import (
    HEALTH_PATH,
    INTERNAL_TOKEN_HEADER,
    require_internal_token,
)

log = logging.getLogger(__name__)

SERVICE_NAME = "storage"
HEALTH_ENDPOINT = "healthz"
# Quart's limit on waiting for a whole body; uploads are streamed, but keep it generous.
BODY_TIMEOUT_SECONDS = 3600


def create_app(
    settings: Settings,
    *,
    consume_logs: bool = True,
    max_artifact_bytes: int = DEFAULT_MAX_ARTIFACT_BYTES,
    archive_limits: ArchiveLimits | None = None,
) -> Quart:
    """The storage app. `consume_logs=False` serves without the `build-logs` consumer.

    Raises `MissingInternalToken` when GOBUILD_INTERNAL_TOKEN is empty.
    """
    token = require_internal_token(settings, "storage")
    app = Quart(__name__, static_folder=None)
    app.config["MAX_CONTENT_LENGTH"] = max_artifact_bytes
    app.config["BODY_TIMEOUT"] = BODY_TIMEOUT_SECONDS

    artifacts = ArtifactStore(settings.artifacts_dir, max_artifact_bytes)
    storage = StorageServices(
        settings=settings,
        artifacts=artifacts,
        deployments=DeploymentFiles(settings.deployments_dir, artifacts, archive_limits),
        logs=LogStore(settings.logs_dir),
        caches=CacheBlobs(settings.caches_dir, settings.cache_max_bytes),
    )
    app.extensions[EXTENSION_KEY] = storage
    consumer = LogConsumer(settings, storage.logs) if consume_logs else None

    @app.before_serving
    async def start() -> None:
        await asyncio.to_thread(_create_folders, settings)
        removed = await storage.deployments.remove_interrupted()
        if removed:
            log.info("removed %d interrupted deployment extractions", removed)
        removed = await storage.artifacts.remove_partial_uploads()
        if removed:
            log.info("removed %d partial artifact uploads left by a crash", removed)
        removed = await storage.caches.remove_partial_uploads()
        if removed:
            log.info("removed %d partial cache uploads left by a crash", removed)
        if consumer is not None:
            consumer.start()
        log.info("storage serving files under %s", settings.data_dir)

    @app.after_serving
    async def stop() -> None:
        log.info("storage stopping")
        if consumer is not None:
            await consumer.stop()

    @app.get(HEALTH_PATH, endpoint=HEALTH_ENDPOINT)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    app.before_request(_require_internal_token(token))
    register_error_handlers(app)
    app.register_blueprint(artifact_routes.blueprint)
    app.register_blueprint(deployment_routes.blueprint)
    app.register_blueprint(log_routes.blueprint)
    app.register_blueprint(cache_routes.blueprint)
    return app


def _require_internal_token(token: str) -> Callable[[], Awaitable[Response | None]]:
    """A before_request hook: every route but /healthz needs the shared internal token."""
    expected = token.encode()

    async def check() -> Response | None:
        if request.endpoint == HEALTH_ENDPOINT:
            return None
        given = request.headers.get(INTERNAL_TOKEN_HEADER, "").encode()
        if hmac.compare_digest(given, expected):
            return None
        return error_response(
            401, "unauthorized", f"this service requires a valid {INTERNAL_TOKEN_HEADER} header"
        )

    return check


def _create_folders(settings: Settings) -> None:
    folders = (settings.artifacts_dir, settings.logs_dir, settings.deployments_dir)
    for folder in (*folders, settings.caches_dir):
        folder.mkdir(parents=True, exist_ok=True)
