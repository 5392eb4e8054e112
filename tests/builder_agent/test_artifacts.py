"""Packing a build's output folder: what goes into the archive and what stays out."""

from __future__ import annotations

import hashlib
import tarfile
from pathlib import Path

import pytest

from gobuild.builder_agent.artifacts import ArtifactError, find_output, pack_output


def make_site(root: Path) -> Path:
    site = root / "dist"
    (site / "assets").mkdir(parents=True)
    (site / "index.html").write_text("<h1>hello</h1>")
    (site / "assets" / "app.js").write_text("console.log(1)")
    (site / "alias.html").symlink_to("index.html")
    (site / "passwd").symlink_to("/etc/passwd")
    (site / "up").symlink_to("../secret.txt")
    (site / "linked-dir").symlink_to("assets")
    (site / ".git").mkdir()
    (site / ".git" / "config").write_text("[remote]")
    (root / "secret.txt").write_text("do not ship")
    return site


def members(archive: Path) -> dict[str, bytes | None]:
    with tarfile.open(archive, "r:gz") as tar:
        return {
            m.name: (tar.extractfile(m).read() if m.isfile() else None)  # type: ignore[union-attr]
            for m in tar.getmembers()
        }


async def test_output_is_packed_with_relative_names_and_its_checksum(tmp_path: Path) -> None:
    site = make_site(tmp_path / "ws")
    archive = tmp_path / "out.tar.gz"

    packed = await pack_output(site, archive)

    content = members(archive)
    assert content == {
        "alias.html": b"<h1>hello</h1>",
        "assets": None,
        "assets/app.js": b"console.log(1)",
        "index.html": b"<h1>hello</h1>",
    }
    data = archive.read_bytes()
    assert packed.sha256 == hashlib.sha256(data).hexdigest()
    assert packed.size == len(data)
    assert packed.files == 3


async def test_links_leading_outside_and_folder_links_are_skipped_and_reported(
    tmp_path: Path,
) -> None:
    site = make_site(tmp_path / "ws")

    packed = await pack_output(site, tmp_path / "out.tar.gz")

    assert sorted(packed.skipped) == [
        "linked-dir (link to a folder)",
        "passwd (link leads outside the output folder)",
        "up (link leads outside the output folder)",
    ]


async def test_archive_members_are_plain_files_readable_by_anyone(tmp_path: Path) -> None:
    site = make_site(tmp_path / "ws")
    (site / "index.html").chmod(0o600)
    archive = tmp_path / "out.tar.gz"

    await pack_output(site, archive)

    with tarfile.open(archive, "r:gz") as tar:
        infos = {m.name: m for m in tar.getmembers()}
    assert all(m.isfile() or m.isdir() for m in infos.values())
    assert infos["index.html"].mode == 0o644
    assert {(m.uid, m.gid) for m in infos.values()} == {(0, 0)}


def test_output_folder_is_found_by_name_or_detected(tmp_path: Path) -> None:
    (tmp_path / "build").mkdir()
    (tmp_path / "public").mkdir()

    assert find_output(tmp_path, None) == (tmp_path / "build").resolve()
    assert find_output(tmp_path, "public") == (tmp_path / "public").resolve()
    assert find_output(tmp_path, ".") == tmp_path.resolve()


def test_missing_output_folder_is_named_in_the_error(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError) as error:
        find_output(tmp_path, "dist")
    assert str(error.value) == "output folder 'dist' not found"

    with pytest.raises(ArtifactError, match="no 'dist' or 'build' after the build"):
        find_output(tmp_path, None)


def test_output_folder_linking_outside_the_repository_is_refused(tmp_path: Path) -> None:
    (tmp_path / "ws").mkdir()
    (tmp_path / "ws" / "dist").symlink_to("/etc")

    with pytest.raises(ArtifactError, match="leads outside the repository"):
        find_output(tmp_path / "ws", "dist")
