"""Safe extraction of build archives: unsafe entries reject the whole archive and leave
nothing behind; a good archive is extracted completely."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from storage_testing import (
    Entry,
    build_tar_gz,
    directory,
    file,
    hardlink,
    special,
    symlink,
)

from gobuild.platform.storage.archive import (
    ArchiveLimits,
    InvalidArchiveError,
    UnsafeArchiveError,
    extract_archive,
    remove_staging_folders,
)


def extract(tmp_path: Path, entries: list[Entry], limits: ArchiveLimits | None = None):
    archive = tmp_path / "build.tar.gz"
    archive.write_bytes(build_tar_gz(entries))
    return extract_archive(archive, tmp_path / "deployments" / "site", limits)


def assert_nothing_left(tmp_path: Path) -> None:
    deployments = tmp_path / "deployments"
    assert list(deployments.iterdir()) == []
    assert not (tmp_path / "evil").exists()


UNSAFE_CASES = {
    "absolute path": (
        [file("index.html", "ok"), file("/etc/evil", "x")],
        "entry '/etc/evil' has an absolute path and escapes the deployment root",
    ),
    "parent component": (
        [file("index.html", "ok"), file("../evil", "x")],
        "entry '../evil' escapes the deployment root",
    ),
    "parent component in the middle": (
        [file("a/../../evil", "x")],
        "entry 'a/../../evil' escapes the deployment root",
    ),
    "absolute symlink": (
        [symlink("passwd", "/etc/passwd")],
        "symlink 'passwd' -> '/etc/passwd' is absolute and escapes the deployment root",
    ),
    "relative symlink escaping": (
        [directory("sub"), symlink("sub/up", "../../evil")],
        "symlink 'sub/up' -> '../../evil' escapes the deployment root",
    ),
    "symlink chain escaping": (
        # `here` is the root itself, so `sub/l` -> `../here/..` is the root's parent.
        [symlink("here", "."), directory("sub"), symlink("sub/l", "../here/..")],
        "symlink 'sub/l' resolves outside the deployment root",
    ),
    "file written through a symlink": (
        [symlink("here", "."), file("here/index.html", "x")],
        "entry 'here/index.html' is placed beneath a symlink of the archive",
    ),
    "hardlink escaping": (
        [file("index.html", "ok"), hardlink("copy", "../evil")],
        "hardlink 'copy' -> '../evil' escapes the deployment root",
    ),
    "absolute hardlink": (
        [hardlink("passwd", "/etc/passwd")],
        "hardlink 'passwd' -> '/etc/passwd' escapes the deployment root",
    ),
    "hardlink to a symlink": (
        [symlink("link", "index.html"), file("index.html", "ok"), hardlink("copy", "link")],
        "hardlink 'copy' -> 'link' does not point to an earlier file of the archive",
    ),
    "character device": (
        [special("chr", "null")],
        "entry 'null' is a device or fifo, which a deployment cannot hold",
    ),
    "block device": (
        [special("blk", "disk")],
        "entry 'disk' is a device or fifo, which a deployment cannot hold",
    ),
    "fifo": (
        [file("index.html", "ok"), special("fifo", "pipe")],
        "entry 'pipe' is a device or fifo, which a deployment cannot hold",
    ),
    "symlink replaced by a file": (
        [symlink("page.html", "index.html"), file("page.html", "x")],
        "entry 'page.html' appears more than once",
    ),
}


@pytest.mark.parametrize("case", list(UNSAFE_CASES))
def test_unsafe_archive_is_rejected_naming_the_entry_and_leaves_nothing_behind(
    tmp_path: Path, case: str
) -> None:
    entries, message = UNSAFE_CASES[case]
    with pytest.raises(UnsafeArchiveError) as raised:
        extract(tmp_path, entries)
    assert str(raised.value) == message
    assert_nothing_left(tmp_path)


def test_archive_with_more_entries_than_allowed_is_rejected(tmp_path: Path) -> None:
    entries = [file(f"f{i}.txt", "x") for i in range(5)]
    with pytest.raises(UnsafeArchiveError, match="more than 4 entries"):
        extract(tmp_path, entries, ArchiveLimits(max_entries=4))
    assert_nothing_left(tmp_path)


def test_archive_expanding_beyond_the_byte_limit_is_rejected(tmp_path: Path) -> None:
    entries = [file("a.bin", b"x" * 600), file("b.bin", b"y" * 600)]
    with pytest.raises(UnsafeArchiveError, match="expands to more than 1000 bytes"):
        extract(tmp_path, entries, ArchiveLimits(max_bytes=1000))
    assert_nothing_left(tmp_path)


def test_data_that_is_not_a_tar_gz_is_an_invalid_archive(tmp_path: Path) -> None:
    archive = tmp_path / "build.tar.gz"
    archive.write_bytes(b"this is not gzip")
    with pytest.raises(InvalidArchiveError, match=r"not a readable tar\.gz archive"):
        extract_archive(archive, tmp_path / "deployments" / "site")
    assert_nothing_left(tmp_path)


def test_truncated_archive_is_invalid_and_leaves_nothing(tmp_path: Path) -> None:
    data = build_tar_gz([file("big.bin", os.urandom(200_000))])
    archive = tmp_path / "build.tar.gz"
    archive.write_bytes(data[: len(data) // 2])
    with pytest.raises(InvalidArchiveError):
        extract_archive(archive, tmp_path / "deployments" / "site")
    assert_nothing_left(tmp_path)


def test_good_archive_with_nested_folders_and_links_is_extracted(tmp_path: Path) -> None:
    entries = [
        directory("./"),
        file("./index.html", "<h1>home</h1>"),
        directory("docs"),
        directory("docs/guide"),
        file("docs/guide/intro.html", "<p>intro</p>"),
        file("assets/js/app.js", "run()", mode=0o4755),
        symlink("docs/latest", "guide/intro.html"),
        symlink("docs/guide/home.html", "../../index.html"),
        hardlink("copy.html", "index.html"),
    ]
    result = extract(tmp_path, entries)

    site = tmp_path / "deployments" / "site"
    assert (result.files, result.bytes) == (4, len("<h1>home</h1>") + len("<p>intro</p>") + 5)
    assert (site / "index.html").read_text() == "<h1>home</h1>"
    assert (site / "docs/guide/intro.html").read_text() == "<p>intro</p>"
    assert (site / "docs/latest").read_text() == "<p>intro</p>"
    assert (site / "docs/guide/home.html").read_text() == "<h1>home</h1>"
    assert (site / "copy.html").read_text() == "<h1>home</h1>"
    assert os.readlink(site / "docs/latest") == "guide/intro.html"
    # Permissions are normalized: executable stays executable, setuid is dropped.
    assert stat.S_IMODE((site / "assets/js/app.js").stat().st_mode) == 0o755
    assert stat.S_IMODE((site / "index.html").stat().st_mode) == 0o644
    assert [p.name for p in (tmp_path / "deployments").iterdir()] == ["site"]


def test_extracting_onto_an_existing_deployment_is_refused(tmp_path: Path) -> None:
    (tmp_path / "deployments" / "site").mkdir(parents=True)
    with pytest.raises(FileExistsError):
        extract(tmp_path, [file("index.html", "x")])


def test_staging_folders_of_an_interrupted_extraction_are_removed(tmp_path: Path) -> None:
    leftover = tmp_path / ".site.abc123.extracting"
    (leftover / "sub").mkdir(parents=True)
    (tmp_path / "live").mkdir()
    assert remove_staging_folders(tmp_path) == 1
    assert [p.name for p in tmp_path.iterdir()] == ["live"]
