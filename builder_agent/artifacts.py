"""A build's output: find the folder, pack it into a tar.gz, upload it to storage and deploy it.

The archive holds regular files and folders under relative names. A symbolic link to a file
inside the output is stored as a copy of that file; links to folders, links that lead outside
the output and special files are left out (and reported), so the archive can be unpacked
anywhere without following a link. `.git` folders are never packed.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import stat
import tarfile
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import httpx
from pydantic import ValidationError

from gobuild.builder_agent.repo_config import DETECTED_OUTPUTS
from gobuild.platform.config import Settings
from gobuild.platform.events import ArtifactRef

UPLOAD_CHUNK_BYTES = 1024 * 1024
CHECKSUM_HEADER = "X-Checksum-Sha256"
TOKEN_HEADER = "X-GoBuild-Internal-Token"
_SKIPPED_FOLDERS = frozenset({".git"})
_REQUEST_TIMEOUT = httpx.Timeout(60.0, connect=5.0, pool=10.0)


class ArtifactError(RuntimeError):
    """The output could not be found, packed, uploaded or deployed; safe to show in the log."""


@dataclass(frozen=True)
class PackedOutput:
    path: Path
    sha256: str
    size: int
    files: int
    skipped: list[str] = field(default_factory=list)


def find_output(workspace: Path, output: str | None) -> Path:
    """The output folder inside the workspace; `None` looks for `dist`, then `build`."""
    root = workspace.resolve()
    candidates = [output] if output is not None else list(DETECTED_OUTPUTS)
    for name in candidates:
        folder = (workspace / name).resolve()
        if not folder.is_relative_to(root):
            raise ArtifactError(f"output folder '{name}' leads outside the repository")
        if folder.is_dir():
            return folder
    if output is not None:
        raise ArtifactError(f"output folder '{output}' not found")
    looked_for = " or ".join(f"'{name}'" for name in DETECTED_OUTPUTS)
    raise ArtifactError(
        f"output folder not found: no {looked_for} after the build (set `output` in gobuild.toml)"
    )


class _HashingWriter:
    """A write-only file that hashes and counts what passes through it."""

    def __init__(self, target: BinaryIO) -> None:
        self._target = target
        self.sha256 = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.sha256.update(data)
        self.size += len(data)
        return self._target.write(data)

    def flush(self) -> None:
        self._target.flush()


def _normalized(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    # Readable by whoever serves the files; executable bits survive, nothing else does.
    info.mode = 0o755 if info.isdir() or info.mode & 0o111 else 0o644
    return info


def _pack(output_dir: Path, archive: Path) -> PackedOutput:
    root = output_dir.resolve()
    skipped: list[str] = []
    files = 0
    with archive.open("wb") as raw:
        writer = _HashingWriter(raw)
        with tarfile.open(fileobj=writer, mode="w:gz", compresslevel=6) as tar:  # type: ignore[call-overload]
            for folder, dirs, names in os.walk(root):
                dirs.sort()
                base = Path(folder)
                for name in list(dirs):
                    path = base / name
                    rel = path.relative_to(root).as_posix()
                    if name in _SKIPPED_FOLDERS:
                        dirs.remove(name)
                    elif path.is_symlink():
                        dirs.remove(name)
                        skipped.append(f"{rel} (link to a folder)")
                    else:
                        tar.addfile(_normalized(tar.gettarinfo(str(path), arcname=rel)))
                for name in sorted(names):
                    path = base / name
                    rel = path.relative_to(root).as_posix()
                    source = path
                    if path.is_symlink():
                        target = path.resolve()
                        if not target.is_relative_to(root):
                            skipped.append(f"{rel} (link leads outside the output folder)")
                            continue
                        if not target.is_file():
                            skipped.append(f"{rel} (link to a missing file or a folder)")
                            continue
                        source = target
                    mode = source.lstat().st_mode
                    if not stat.S_ISREG(mode):
                        skipped.append(f"{rel} (not a regular file)")
                        continue
                    info = _normalized(tar.gettarinfo(str(source), arcname=rel))
                    with source.open("rb") as content:
                        tar.addfile(info, content)
                    files += 1
        raw.flush()
    return PackedOutput(
        path=archive,
        sha256=writer.sha256.hexdigest(),
        size=writer.size,
        files=files,
        skipped=skipped,
    )


async def pack_output(output_dir: Path, archive: Path) -> PackedOutput:
    """Write `output_dir` as a tar.gz to `archive`, hashing it on the way."""
    try:
        return await asyncio.to_thread(_pack, output_dir, archive)
    except OSError as exc:
        raise ArtifactError(f"could not pack the output folder: {exc}") from None


async def _file_chunks(path: Path) -> AsyncIterator[bytes]:
    handle = await asyncio.to_thread(path.open, "rb")
    try:
        while chunk := await asyncio.to_thread(handle.read, UPLOAD_CHUNK_BYTES):
            yield chunk
    finally:
        await asyncio.to_thread(handle.close)


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
    """The storage service as the builder uses it: upload an artifact, deploy a build."""

    def __init__(self, http: httpx.AsyncClient, settings: Settings) -> None:
        self._http = http
        self._base = settings.storage_url.rstrip("/")
        self._token = settings.internal_token

    def _headers(self) -> dict[str, str]:
        return {TOKEN_HEADER: self._token} if self._token else {}

    async def upload_artifact(
        self, build_id: str, packed: PackedOutput, timeout: float = 600.0
    ) -> ArtifactRef:
        """Stream the archive to `PUT /artifacts/{build_id}`; storage checks the checksum."""
        headers = {
            **self._headers(),
            CHECKSUM_HEADER: packed.sha256,
            "Content-Type": "application/gzip",
            "Content-Length": str(packed.size),
        }
        try:
            async with asyncio.timeout(timeout):
                response = await self._http.put(
                    f"{self._base}/artifacts/{build_id}",
                    content=_file_chunks(packed.path),
                    headers=headers,
                    timeout=_REQUEST_TIMEOUT,
                )
        except TimeoutError:
            raise ArtifactError(f"uploading the artifact took longer than {timeout:.0f}s") from None
        except httpx.HTTPError as exc:
            raise ArtifactError(f"could not reach storage to upload the artifact: {exc}") from None
        if response.status_code not in (200, 201):
            raise ArtifactError(
                f"storage refused the artifact (HTTP {response.status_code}): "
                f"{_error_detail(response)}"
            )
        try:
            ref = ArtifactRef.model_validate_json(response.content)
        except ValidationError:
            raise ArtifactError("storage answered the upload with an unexpected body") from None
        if ref.sha256 != packed.sha256 or ref.size != packed.size:
            raise ArtifactError(
                f"storage stored {ref.size} bytes with sha256 {ref.sha256}, "
                f"but {packed.size} bytes with sha256 {packed.sha256} were sent"
            )
        return ref

    async def deploy(self, deployment_id: str, build_id: str, timeout: float = 300.0) -> None:
        """Ask storage to unpack the build's artifact as deployment `deployment_id`."""
        try:
            async with asyncio.timeout(timeout):
                response = await self._http.post(
                    f"{self._base}/deployments/{deployment_id}",
                    json={"build_id": build_id},
                    headers=self._headers(),
                    timeout=_REQUEST_TIMEOUT,
                )
        except TimeoutError:
            raise ArtifactError(f"deploying took longer than {timeout:.0f}s") from None
        except httpx.HTTPError as exc:
            raise ArtifactError(f"could not reach storage to deploy: {exc}") from None
        if response.status_code not in (200, 201):
            raise ArtifactError(
                f"storage refused the deployment (HTTP {response.status_code}): "
                f"{_error_detail(response)}"
            )
