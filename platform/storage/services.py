"""The stores one storage app works with, reachable from request handlers."""

from __future__ import annotations

from dataclasses import dataclass

from quart import current_app

from gobuild.platform.config import Settings
from gobuild.platform.storage.artifacts import ArtifactStore
from gobuild.platform.storage.caches import CacheBlobs
from gobuild.platform.storage.deployments import DeploymentFiles
from gobuild.platform.storage.logs import LogStore

EXTENSION_KEY = "gobuild.storage"


@dataclass(frozen=True)
class StorageServices:
    settings: Settings
    artifacts: ArtifactStore
    deployments: DeploymentFiles
    logs: LogStore
    caches: CacheBlobs


def services() -> StorageServices:
    """The services of the app handling the current request."""
    return current_app.extensions[EXTENSION_KEY]
