"""A build's output: find the folder and pack it into a tar.gz (`StorageClient`, from the
storage contract module, uploads and deploys it).

The archive holds regular files and folders under relative names. A symbolic link to a file
inside the output is stored as a copy of that file; links to folders, links that lead outside
the output and special files are left out (and reported), so the archive can be unpacked
anywhere without following a link. `.git` and `.gobuild-cache` folders are never packed.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import stat
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from gobuild.builder_agent.dependency_cache import CACHE_ROOT
from gobuild.builder_agent.repo_config import DETECTED_OUTPUTS
from gobuild.platform.storage_client import StorageClient

# StorageClient lives in the storage contract module; it is named here for older imports.
__all__ = ["ArtifactError", "PackedOutput", "StorageClient", "find_output", "pack_output"]

# The dependency cache's folder is the builder's, not the build's output.
_SKIPPED_FOLDERS = frozenset({".git", CACHE_ROOT})


class ArtifactError(RuntimeError):
    """The output could not be found or packed; safe to show in the build log."""


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


class HashingWriter:
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
        writer = HashingWriter(raw)
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
