"""What retention needs of the storage service; `gobuild.platform.storage_client.StorageClient`
provides it (tests wrap one to count or interrupt removals)."""

from __future__ import annotations

from typing import Protocol


class StorageFiles(Protocol):
    async def log_size(self, build_id: str) -> int | None: ...

    async def deployment_size(self, deployment_id: str) -> int | None: ...

    async def delete_artifact(self, build_id: str) -> None: ...

    async def delete_log(self, build_id: str) -> None: ...

    async def delete_deployment(self, deployment_id: str) -> None: ...

    async def delete_cache(self, project_id: str, kind: str, key: str) -> None: ...
