"""Cache folders as tar.gz archives, packed and unpacked on the builder host.

The folders are written by untrusted build steps, so packing never follows a link: a folder
reached through a link, or leading outside the folder that is built, is not packed, and links
inside are kept as links. Unpacking uses tarfile's `data` filter (nothing lands outside the
destination, through a link the repository holds or otherwise; no devices, no absolute links)
and takes only members of the folders asked for.
"""

from __future__ import annotations

import os
import stat
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from gobuild.builder_agent.artifacts import HashingWriter


class CacheArchiveError(RuntimeError):
    """A cache could not be packed or unpacked; safe to show in the build log."""


@dataclass(frozen=True)
class PackedCache:
    """A cache archive on disk (a `storage_client.ArchiveFile`)."""

    path: Path
    sha256: str
    size: int
    files: int


def contained_folder(root: Path, relative: str) -> Path | None:
    """`root/relative` if it is a real folder there, reached without following any link;
    None otherwise (missing, a file, or a link somewhere on the way)."""
    top = root.resolve()
    path = top
    for part in PurePosixPath(relative).parts:
        if part in ("", ".", ".."):
            return None
        path = path / part
        try:
            mode = path.lstat().st_mode
        except (FileNotFoundError, NotADirectoryError):
            return None
        if not stat.S_ISDIR(mode):
            return None
    return path


def _add_tree(tar: tarfile.TarFile, root: Path, folder: Path) -> int:
    files = 0
    tar.add(str(folder), arcname=folder.relative_to(root).as_posix(), recursive=False)
    for current, dirs, names in os.walk(folder, followlinks=False):
        dirs.sort()
        for name in (*dirs, *sorted(names)):
            path = Path(current, name)
            mode = path.lstat().st_mode
            # Regular files, folders and links as links; fifos and sockets are left out.
            if stat.S_ISREG(mode) or stat.S_ISDIR(mode) or stat.S_ISLNK(mode):
                tar.add(str(path), arcname=path.relative_to(root).as_posix(), recursive=False)
                files += stat.S_ISREG(mode)
    return files


def pack_folders(root: Path, folders: Sequence[str], archive: Path) -> PackedCache | None:
    """Pack those of `folders` (relative to `root`) that are real folders into `archive`
    (blocking); None when there is none of them."""
    found = [path for path in (contained_folder(root, name) for name in folders) if path]
    if not found:
        return None
    top = root.resolve()
    files = 0
    try:
        with archive.open("wb") as raw:
            writer = HashingWriter(raw)
            with tarfile.open(fileobj=writer, mode="w:gz", compresslevel=1) as tar:  # type: ignore[call-overload]
                for folder in found:
                    files += _add_tree(tar, top, folder)
    except OSError as exc:
        raise CacheArchiveError(f"could not pack the cache: {exc}") from None
    return PackedCache(archive, writer.sha256.hexdigest(), writer.size, files)


def unpack_folders(archive: Path, root: Path, folders: Sequence[str]) -> int:
    """Unpack the members of `archive` that lie in `folders` into `root` (blocking); how
    many files. Folders that are there are added to, not replaced."""
    wanted = [PurePosixPath(name) for name in folders]
    top = str(root.resolve())
    files = 0

    def keep(member: tarfile.TarInfo, destination: str) -> tarfile.TarInfo | None:
        nonlocal files
        name = PurePosixPath(member.name)
        if not any(name == folder or folder in name.parents for folder in wanted):
            return None
        checked = tarfile.data_filter(member, destination)
        files += checked.isfile()
        return checked

    try:
        with tarfile.open(archive, mode="r:gz") as tar:
            tar.extractall(top, filter=keep)
    except (tarfile.TarError, OSError) as exc:
        raise CacheArchiveError(f"could not unpack the cache: {exc}") from None
    return files


def size_text(size: int) -> str:
    """`12.3 MiB`: a size for people."""
    value = float(size)
    for unit in ("bytes", "KiB", "MiB"):
        if value < 1024:
            return f"{size} bytes" if unit == "bytes" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"
