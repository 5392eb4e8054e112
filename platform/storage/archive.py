"""Safe extraction of build artifacts (tar.gz) into a deployment folder.

The whole archive is rejected when any entry is unsafe: an absolute path, a `..`
component, a symlink or hardlink that leads outside the root, a device or fifo, an entry
placed beneath a symlink, or more entries or bytes than the limits allow. Extraction goes
to a staging folder next to the destination that is renamed into place only when every
entry was written, so a rejected archive leaves nothing behind.

Entries are written by this module, not by `TarFile.extract`: regular files are created
with O_EXCL|O_NOFOLLOW and fixed permissions, so no existing path is ever followed.
"""

from __future__ import annotations

import contextlib
import gzip
import os
import posixpath
import shutil
import tarfile
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import IO

DEFAULT_MAX_ENTRIES = 100_000
DEFAULT_MAX_BYTES = 4 * 1024**3
COPY_CHUNK_BYTES = 1024 * 1024
STAGING_SUFFIX = ".extracting"


@dataclass(frozen=True)
class ArchiveLimits:
    """Caps on what one archive may expand to."""

    max_entries: int = DEFAULT_MAX_ENTRIES
    max_bytes: int = DEFAULT_MAX_BYTES


@dataclass(frozen=True)
class ExtractionResult:
    files: int
    bytes: int


class ArchiveError(Exception):
    """An archive that was not extracted; `str(exc)` says why, for the client."""


class UnsafeArchiveError(ArchiveError):
    """An entry would write outside the root, is a special file, or breaks a limit."""

    def __init__(self, entry: str, message: str) -> None:
        super().__init__(message)
        self.entry = entry


class InvalidArchiveError(ArchiveError):
    """Not a readable tar.gz, or an entry that cannot be written as described."""


def extract_archive(
    archive: Path, destination: Path, limits: ArchiveLimits | None = None
) -> ExtractionResult:
    """Extract `archive` into the new folder `destination` (which must not exist yet).

    Blocking; call it through `asyncio.to_thread`. Raises UnsafeArchiveError or
    InvalidArchiveError and leaves no file behind when the archive is rejected, and
    FileExistsError when `destination` already exists.
    """
    if os.path.lexists(destination):
        raise FileExistsError(destination)
    destination.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(
        tempfile.mkdtemp(
            dir=destination.parent, prefix=f".{destination.name}.", suffix=STAGING_SUFFIX
        )
    )
    try:
        staging.chmod(0o755)
        result = _Extraction(staging, limits or ArchiveLimits()).run(archive)
        os.rename(staging, destination)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return result


def remove_staging_folders(parent: Path) -> int:
    """Remove staging folders an interrupted extraction left in `parent`."""
    removed = 0
    if not parent.is_dir():
        return removed
    for path in parent.glob(f".*{STAGING_SUFFIX}"):
        shutil.rmtree(path, ignore_errors=True)
        removed += 1
    return removed


class _Extraction:
    """One pass over the archive's members, writing each after it was checked."""

    def __init__(self, root: Path, limits: ArchiveLimits) -> None:
        self.root = root
        self.limits = limits
        self.kinds: dict[str, str] = {}  # normalized path -> "dir" | "file" | "symlink"
        self.symlinks: set[str] = set()
        self.entries = 0
        self.files = 0
        self.bytes = 0

    def run(self, archive: Path) -> ExtractionResult:
        try:
            with tarfile.open(archive, mode="r|gz") as tar:
                for member in tar:
                    self._extract_member(tar, member)
        except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as exc:
            raise InvalidArchiveError(f"not a readable tar.gz archive: {exc}") from exc
        self._check_symlinks_resolve_inside()
        return ExtractionResult(files=self.files, bytes=self.bytes)

    def _extract_member(self, tar: tarfile.TarFile, member: tarfile.TarInfo) -> None:
        name = member.name
        self.entries += 1
        if self.entries > self.limits.max_entries:
            raise UnsafeArchiveError(
                name, f"archive has more than {self.limits.max_entries} entries"
            )
        parts = _entry_parts(name)
        if not parts:
            if member.isdir():
                return  # the root folder itself ("./")
            raise UnsafeArchiveError(name, f"entry '{name}' has no file name")
        relative = "/".join(parts)
        self._check_not_beneath_symlink(name, parts)
        previous = self.kinds.get(relative)
        if previous is not None and not (previous == "dir" and member.isdir()):
            raise UnsafeArchiveError(name, f"entry '{name}' appears more than once")
        target = self.root.joinpath(*parts)
        try:
            if member.isdir():
                target.mkdir(mode=0o755, parents=True, exist_ok=True)
                self.kinds[relative] = "dir"
            elif member.isreg():
                self._write_file(tar, member, target)
                self.kinds[relative] = "file"
            elif member.issym():
                self._make_symlink(member, relative, target)
                self.kinds[relative] = "symlink"
                self.symlinks.add(relative)
            elif member.islnk():
                self._make_hardlink(member, target)
                self.kinds[relative] = "file"
            elif member.ischr() or member.isblk() or member.isfifo():
                raise UnsafeArchiveError(
                    name, f"entry '{name}' is a device or fifo, which a deployment cannot hold"
                )
            else:
                raise UnsafeArchiveError(name, f"entry '{name}' has an unsupported type")
        except (OSError, ValueError, OverflowError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
            raise InvalidArchiveError(f"entry '{name}' could not be extracted: {reason}") from exc

    def _check_not_beneath_symlink(self, name: str, parts: list[str]) -> None:
        for depth in range(1, len(parts)):
            if "/".join(parts[:depth]) in self.symlinks:
                raise UnsafeArchiveError(
                    name, f"entry '{name}' is placed beneath a symlink of the archive"
                )

    def _write_file(self, tar: tarfile.TarFile, member: tarfile.TarInfo, target: Path) -> None:
        self.bytes += member.size
        if self.bytes > self.limits.max_bytes:
            raise UnsafeArchiveError(
                member.name, f"archive expands to more than {self.limits.max_bytes} bytes"
            )
        source = tar.extractfile(member)
        if source is None:
            raise InvalidArchiveError(f"entry '{member.name}' has no content")
        target.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        mode = 0o755 if member.mode & 0o111 else 0o644
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
        with os.fdopen(fd, "wb") as out:
            _copy(source, out)
        # Served as Last-Modified; an out-of-range time in the header just keeps "now".
        with contextlib.suppress(OSError, ValueError, OverflowError):
            os.utime(target, (member.mtime, member.mtime))
        self.files += 1

    def _make_symlink(self, member: tarfile.TarInfo, relative: str, target: Path) -> None:
        link = member.linkname
        if not link:
            raise UnsafeArchiveError(member.name, f"symlink '{member.name}' has no target")
        if link.startswith("/"):
            raise UnsafeArchiveError(
                member.name,
                f"symlink '{member.name}' -> '{link}' is absolute and escapes the deployment root",
            )
        resolved = posixpath.normpath(posixpath.join(posixpath.dirname(relative), link))
        if resolved == ".." or resolved.startswith("../"):
            raise UnsafeArchiveError(
                member.name, f"symlink '{member.name}' -> '{link}' escapes the deployment root"
            )
        target.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        os.symlink(link, target)

    def _make_hardlink(self, member: tarfile.TarInfo, target: Path) -> None:
        link = member.linkname
        link_parts = [part for part in link.split("/") if part not in ("", ".")]
        if link.startswith("/") or ".." in link_parts:
            raise UnsafeArchiveError(
                member.name, f"hardlink '{member.name}' -> '{link}' escapes the deployment root"
            )
        if self.kinds.get("/".join(link_parts)) != "file":
            raise UnsafeArchiveError(
                member.name,
                f"hardlink '{member.name}' -> '{link}' does not point to an earlier file "
                "of the archive",
            )
        target.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        os.link(self.root.joinpath(*link_parts), target, follow_symlinks=False)
        self.files += 1

    def _check_symlinks_resolve_inside(self) -> None:
        # The lexical check above cannot see chains (a link that walks through another
        # link and then up); resolving on disk can, before anything is published.
        root = os.path.realpath(self.root)
        for relative in sorted(self.symlinks):
            resolved = os.path.realpath(self.root / relative)
            if resolved != root and not resolved.startswith(root + os.sep):
                raise UnsafeArchiveError(
                    relative, f"symlink '{relative}' resolves outside the deployment root"
                )


def _entry_parts(name: str) -> list[str]:
    """The path components of an entry name; raises for absolute or escaping names."""
    if "\x00" in name:
        raise UnsafeArchiveError(name, f"entry {name!r} contains a NUL byte")
    if name.startswith("/"):
        raise UnsafeArchiveError(
            name, f"entry '{name}' has an absolute path and escapes the deployment root"
        )
    parts = [part for part in name.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise UnsafeArchiveError(name, f"entry '{name}' escapes the deployment root")
    return parts


def _copy(source: IO[bytes], out: IO[bytes]) -> None:
    while chunk := source.read(COPY_CHUNK_BYTES):
        out.write(chunk)
