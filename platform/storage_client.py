"""The storage service's HTTP contract, held once: the internal token header, the paths of
artifacts, logs, deployment files and caches, and the client the builder uploads and deploys
with.

Every path is built from checked segments, each quoted on its own: a caller never pastes
outside input into a storage URL, so no input can walk (`..`, `%2f`) into another route.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import quote, unquote_to_bytes

import httpx
from pydantic import ValidationError

from gobuild.platform.config import Settings
from gobuild.platform.events import ArtifactRef

INTERNAL_TOKEN_HEADER = "X-GoBuild-Internal-Token"
CHECKSUM_HEADER = "X-Checksum-Sha256"
HEALTH_PATH = "/healthz"  # the only route storage serves without the internal token

UPLOAD_CHUNK_BYTES = 1024 * 1024
_REQUEST_TIMEOUT = httpx.Timeout(60.0, connect=5.0, pool=10.0)
_DOT_SEGMENTS = frozenset({".", ".."})


class MissingInternalToken(RuntimeError):
    """GOBUILD_INTERNAL_TOKEN is empty where storage is served or called."""


class InvalidFilePath(ValueError):
    """A requested file path that could leave the deployment's files; answer it with 404."""


class StorageError(RuntimeError):
    """Storage could not be reached or refused a request; the message is safe to show in a log."""


def require_internal_token(settings: Settings, service: str) -> str:
    """The shared internal token, or `MissingInternalToken` saying how to set it."""
    if settings.internal_token:
        return settings.internal_token
    raise MissingInternalToken(
        f"{service} cannot start: GOBUILD_INTERNAL_TOKEN is empty. Storage answers only "
        f"requests that carry it ({INTERNAL_TOKEN_HEADER}), so set the same secret for "
        "storage, the gateway and the builders (for example `openssl rand -hex 32` in .env); "
        "`gobuild dev` generates one into <data dir>/internal-token."
    )


def internal_headers(token: str) -> dict[str, str]:
    """The header that proves a request comes from another GoBuild service."""
    return {INTERNAL_TOKEN_HEADER: token} if token else {}


def _id_segment(value: str) -> str:
    """An id (build, deployment) as one quoted path segment."""
    if value in _DOT_SEGMENTS or not value:
        raise ValueError(f"{value!r} is not an id storage can hold")
    return quote(value, safe="")


def artifact_path(build_id: str) -> str:
    return f"/artifacts/{_id_segment(build_id)}"


def log_path(build_id: str) -> str:
    return f"/logs/{_id_segment(build_id)}"


def deployment_path(deployment_id: str) -> str:
    return f"/deployments/{_id_segment(deployment_id)}"


def project_caches_path(project_id: str) -> str:
    return f"/caches/{_id_segment(project_id)}"


def cache_path(project_id: str, kind: str, key: str) -> str:
    return f"{project_caches_path(project_id)}/{_id_segment(kind)}/{_id_segment(key)}"


def _checked_segment(raw: str) -> str:
    try:
        name = unquote_to_bytes(raw).decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidFilePath("a path segment is not UTF-8") from None
    if name in _DOT_SEGMENTS:
        raise InvalidFilePath("dot segments are not served")
    for char in name:
        if char in "/\\" or ord(char) < 0x20 or char == "\x7f":
            raise InvalidFilePath(f"{char!r} is not allowed in a path segment")
    return quote(name, safe="")


def quote_file_path(raw_path: str) -> str:
    """A request path (still percent-encoded, as received) as a path relative to a
    deployment's files: each segment decoded once, refused if it is `.` or `..` or holds a
    slash, backslash or control character (also when percent-encoded), then quoted again.

    Empty segments are refused except the last one (`/docs/` asks for a folder's index).
    """
    if any(ord(char) > 0x7E or ord(char) < 0x21 for char in raw_path):
        raise InvalidFilePath("the path holds characters a request line cannot carry")
    segments = raw_path.removeprefix("/").split("/")
    last = len(segments) - 1
    quoted: list[str] = []
    for index, raw in enumerate(segments):
        if not raw:
            if index != last:
                raise InvalidFilePath("empty path segments are not served")
            quoted.append("")
            continue
        quoted.append(_checked_segment(raw))
    return "/".join(quoted)


def deployment_file_path(deployment_id: str, raw_path: str) -> str:
    """`/deployments/<id>/files/<path>` for a request path; `InvalidFilePath` if it could
    point anywhere but that deployment's files."""
    return f"{deployment_path(deployment_id)}/files/{quote_file_path(raw_path)}"


class ArchiveFile(Protocol):
    """A packed build output on disk, with its checksum and size."""

    @property
    def path(self) -> Path: ...

    @property
    def sha256(self) -> str: ...

    @property
    def size(self) -> int: ...


async def _file_chunks(path: Path) -> AsyncIterator[bytes]:
    handle = await asyncio.to_thread(path.open, "rb")
    try:
        while chunk := await asyncio.to_thread(handle.read, UPLOAD_CHUNK_BYTES):
            yield chunk
    finally:
        await asyncio.to_thread(handle.close)


def _transport_failure(exc: httpx.HTTPError) -> str:
    """What went wrong on the wire. httpx's message is often empty (a connection that storage
    closed mid-request, e.g. because it crashed, is a bare `ReadError`), so name the kind."""
    kinds = {
        httpx.ConnectError: "storage is not reachable",
        httpx.WriteError: "the connection broke while sending the request",
        httpx.ReadError: "the connection broke before storage answered",
        httpx.RemoteProtocolError: "storage closed the connection without a complete answer",
    }
    kind = next((text for cls, text in kinds.items() if isinstance(exc, cls)), "request failed")
    message = str(exc).strip()
    return f"{kind} ({type(exc).__name__}" + (f": {message})" if message else ")")


def _error_detail(response: httpx.Response) -> str:
    try:
        body: Any = response.json()
    except ValueError:
        return response.text[:200] or response.reason_phrase
    if isinstance(body, dict) and "error" in body:
        detail = body.get("detail")
        return f"{body['error']}" + (f": {detail}" if detail else "")
    return str(body)[:200]


class StorageClient:
    """The storage service as the builder and retention use it: upload an artifact, deploy a
    build, save and restore caches; measure and delete artifacts, logs, deployments, caches."""

    def __init__(self, http: httpx.AsyncClient, settings: Settings) -> None:
        self._http = http
        self._base = settings.storage_url.rstrip("/")
        self._headers = internal_headers(settings.internal_token)

    async def upload_artifact(
        self, build_id: str, packed: ArchiveFile, timeout: float = 600.0
    ) -> ArtifactRef:
        """Stream the archive to `PUT /artifacts/{build_id}`; storage checks the checksum."""
        headers = {
            **self._headers,
            CHECKSUM_HEADER: packed.sha256,
            "Content-Type": "application/gzip",
            "Content-Length": str(packed.size),
        }
        try:
            async with asyncio.timeout(timeout):
                response = await self._http.put(
                    self._base + artifact_path(build_id),
                    content=_file_chunks(packed.path),
                    headers=headers,
                    timeout=_REQUEST_TIMEOUT,
                )
        except TimeoutError:
            raise StorageError(f"uploading the artifact took longer than {timeout:.0f}s") from None
        except httpx.HTTPError as exc:
            raise StorageError(
                f"uploading the artifact to storage failed: {_transport_failure(exc)}"
            ) from None
        if response.status_code not in (200, 201):
            raise StorageError(
                f"storage refused the artifact (HTTP {response.status_code}): "
                f"{_error_detail(response)}"
            )
        try:
            ref = ArtifactRef.model_validate_json(response.content)
        except ValidationError:
            raise StorageError("storage answered the upload with an unexpected body") from None
        if ref.sha256 != packed.sha256 or ref.size != packed.size:
            raise StorageError(
                f"storage stored {ref.size} bytes with sha256 {ref.sha256}, "
                f"but {packed.size} bytes with sha256 {packed.sha256} were sent"
            )
        return ref

    async def deploy(self, deployment_id: str, build_id: str, timeout: float = 300.0) -> None:
        """Ask storage to unpack the build's artifact as deployment `deployment_id`."""
        try:
            async with asyncio.timeout(timeout):
                response = await self._http.post(
                    self._base + deployment_path(deployment_id),
                    json={"build_id": build_id},
                    headers=self._headers,
                    timeout=_REQUEST_TIMEOUT,
                )
        except TimeoutError:
            raise StorageError(f"deploying took longer than {timeout:.0f}s") from None
        except httpx.HTTPError as exc:
            raise StorageError(
                f"asking storage to deploy failed: {_transport_failure(exc)}"
            ) from None
        if response.status_code not in (200, 201):
            raise StorageError(
                f"storage refused the deployment (HTTP {response.status_code}): "
                f"{_error_detail(response)}"
            )

    async def log_size(self, build_id: str, timeout: float = 30.0) -> int | None:
        """The size of the build's stored log in bytes; None when it has none."""
        response = await self._ask("HEAD", log_path(build_id), timeout)
        if response is None:
            return None
        try:
            return int(response.headers["Content-Length"])
        except (KeyError, ValueError):
            raise StorageError("storage gave the log without a Content-Length") from None

    async def deployment_size(self, deployment_id: str, timeout: float = 30.0) -> int | None:
        """The bytes of the deployment's files; None when storage has none."""
        response = await self._ask("GET", deployment_path(deployment_id), timeout)
        if response is None:
            return None
        try:
            size = response.json()["bytes"]
        except (ValueError, KeyError, TypeError):
            size = None
        if not isinstance(size, int):
            raise StorageError("storage described the deployment with an unexpected body")
        return size

    async def delete_artifact(self, build_id: str, timeout: float = 60.0) -> None:
        """Remove the build's artifact (nothing to remove is not an error)."""
        await self._ask("DELETE", artifact_path(build_id), timeout)

    async def delete_log(self, build_id: str, timeout: float = 60.0) -> None:
        """Remove the build's log (nothing to remove is not an error)."""
        await self._ask("DELETE", log_path(build_id), timeout)

    async def delete_deployment(self, deployment_id: str, timeout: float = 300.0) -> None:
        """Remove the deployment's files (nothing to remove is not an error)."""
        await self._ask("DELETE", deployment_path(deployment_id), timeout)

    async def upload_cache(
        self, project_id: str, kind: str, key: str, packed: ArchiveFile, timeout: float = 600.0
    ) -> bool:
        """Stream a cache archive to `PUT /caches/{project}/{kind}/{key}`; False (nothing
        stored) when that cache is saved already: caches never change once saved."""
        headers = {
            **self._headers,
            CHECKSUM_HEADER: packed.sha256,
            "Content-Type": "application/gzip",
            "Content-Length": str(packed.size),
            "If-None-Match": "*",
        }
        what = f"the {kind} cache"
        try:
            async with asyncio.timeout(timeout):
                response = await self._http.put(
                    self._base + cache_path(project_id, kind, key),
                    content=_file_chunks(packed.path),
                    headers=headers,
                    timeout=_REQUEST_TIMEOUT,
                )
        except TimeoutError:
            raise StorageError(f"uploading {what} took longer than {timeout:.0f}s") from None
        except httpx.HTTPError as exc:
            raise StorageError(f"uploading {what} failed: {_transport_failure(exc)}") from None
        if response.status_code == 412:
            return False
        if response.status_code not in (200, 201):
            raise StorageError(
                f"storage refused {what} (HTTP {response.status_code}): {_error_detail(response)}"
            )
        try:
            stored = response.json()
        except ValueError:
            stored = None
        if not isinstance(stored, dict) or stored.get("sha256") != packed.sha256:
            raise StorageError(f"storage did not store {what} that was sent")
        return True

    async def download_cache(
        self,
        project_id: str,
        kind: str,
        key: str,
        destination: Path,
        *,
        expected_sha256: str,
        timeout: float = 600.0,
    ) -> int | None:
        """Stream a cache archive into `destination`; its size, or None when storage has no
        such cache. StorageError when it does not hash to `expected_sha256`."""
        what = f"the {kind} cache"
        hasher = hashlib.sha256()
        size = 0
        try:
            async with (
                asyncio.timeout(timeout),
                self._http.stream(
                    "GET",
                    self._base + cache_path(project_id, kind, key),
                    headers=self._headers,
                    timeout=_REQUEST_TIMEOUT,
                ) as response,
            ):
                if response.status_code == 404:
                    return None
                if response.status_code != 200:
                    await response.aread()
                    raise StorageError(
                        f"storage refused {what} (HTTP {response.status_code}): "
                        f"{_error_detail(response)}"
                    )
                handle = await asyncio.to_thread(destination.open, "wb")
                try:
                    async for chunk in response.aiter_bytes(UPLOAD_CHUNK_BYTES):
                        hasher.update(chunk)
                        size += len(chunk)
                        await asyncio.to_thread(handle.write, chunk)
                finally:
                    await asyncio.to_thread(handle.close)
        except TimeoutError:
            raise StorageError(f"downloading {what} took longer than {timeout:.0f}s") from None
        except httpx.HTTPError as exc:
            raise StorageError(f"downloading {what} failed: {_transport_failure(exc)}") from None
        if hasher.hexdigest() != expected_sha256:
            raise StorageError(
                f"{what} from storage has sha256 {hasher.hexdigest()}, not {expected_sha256}"
            )
        return size

    async def delete_cache(
        self, project_id: str, kind: str, key: str, timeout: float = 60.0
    ) -> None:
        """Remove one cache (nothing to remove is not an error)."""
        await self._ask("DELETE", cache_path(project_id, kind, key), timeout)

    async def delete_project_caches(self, project_id: str, timeout: float = 300.0) -> int:
        """Remove every cache storage keeps of the project; the bytes freed."""
        response = await self._ask("DELETE", project_caches_path(project_id), timeout)
        try:
            freed = response.json()["bytes"] if response is not None else 0
        except (ValueError, KeyError, TypeError):
            freed = None
        if not isinstance(freed, int):
            raise StorageError("storage answered the removal of caches with an unexpected body")
        return freed

    async def _ask(self, method: str, path: str, timeout: float) -> httpx.Response | None:
        """One request without a body: the answer, None for 404, `StorageError` otherwise."""
        try:
            async with asyncio.timeout(timeout):
                response = await self._http.request(
                    method, self._base + path, headers=self._headers, timeout=_REQUEST_TIMEOUT
                )
        except TimeoutError:
            raise StorageError(f"{method} {path} took longer than {timeout:.0f}s") from None
        except httpx.HTTPError as exc:
            raise StorageError(f"{method} {path} failed: {_transport_failure(exc)}") from None
        if response.status_code == 404:
            return None
        if not 200 <= response.status_code < 300:
            raise StorageError(
                f"storage refused {method} {path} (HTTP {response.status_code}): "
                f"{_error_detail(response)}"
            )
        return response
