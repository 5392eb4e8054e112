"""Dependency and incremental caches of builds on a real storage service and Redis: what a build
restores (hit, partial, miss), what it saves, and what two builds saving at once leave."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
import httpx
import pytest
import redis.asyncio as aioredis

from gobuild.builder_agent.build_caches import BuildCaches, RunCaches
from gobuild.builder_agent.build_run import BuildRun
from gobuild.builder_agent.cache_archive import CacheArchiveError, pack_folders, unpack_folders
from gobuild.builder_agent.dependency_cache import CACHE_ROOT, dependency_key
from gobuild.builder_agent.repo_config import RepoConfigError, parse_repo_config
from gobuild.platform.config import Settings
from gobuild.platform.events import BuildConfig, BuildRequested
from gobuild.platform.storage_client import StorageClient
from gobuild.platform.stores.caches import CacheIndex
from tests.storage.storage_testing import create_storage_app, running_server

PROJECT = "p_cachetest01"
IMAGE = "docker.io/gobuild/build-base:bookworm"
NPM_FILE = f"{CACHE_ROOT}/deps/npm/_cacache/content/package.tgz"


@dataclass
class RecordedLog:
    """Stands in for the build's log: keeps its lines."""

    lines: list[str] = field(default_factory=list)

    async def system(self, line: str) -> None:
        self.lines.append(line)

    async def write(self, stream: str, line: str) -> None:
        self.lines.append(line)

    def text(self) -> str:
        return "\n".join(self.lines)


@dataclass
class CachedBuilds:
    """Builds of one project, each in a fresh workspace, sharing storage and the index."""

    caches: BuildCaches
    index: CacheIndex
    storage: StorageClient
    root: Path
    count: int = 0

    def start(
        self,
        files: dict[str, str],
        *,
        branch: str = "main",
        production: bool = True,
        image: str = IMAGE,
        folders: tuple[str, ...] = (),
        root_dir: str = ".",
    ) -> tuple[BuildRun, RunCaches]:
        self.count += 1
        build_id = f"b_build{self.count:03d}"
        workspace = self.root / f"{build_id}-1"
        for name, content in files.items():
            (workspace / name).parent.mkdir(parents=True, exist_ok=True)
            (workspace / name).write_text(content)
        workspace.mkdir(parents=True, exist_ok=True)
        request = BuildRequested(
            build_id=build_id,
            project_id=PROJECT,
            project_name="site",
            number=self.count,
            source="api",
            repo_url="https://example.com/site.git",
            ref=f"refs/heads/{branch}",
            branch=branch,
            commit_sha="a" * 40,
            production=production,
            config=BuildConfig(
                image=image, timeout_seconds=60, memory_mb=256, cpus=1, pids_limit=64
            ),
        )
        run = BuildRun(
            request=request,
            attempt=1,
            logs=RecordedLog(),  # type: ignore[arg-type]
            workspace=workspace,
            archive=self.root / f"{build_id}-1.tar.gz",
            started=0.0,
            deadline=1e12,
            timeout_seconds=60,
        )
        return run, self.caches.for_run(run, root_dir, image, folders)

    async def build(
        self, files: dict[str, str], written: dict[str, str], **options: Any
    ) -> tuple[BuildRun, RunCaches]:
        """A whole successful build: restore, 'install' and 'build' (write `written`), save."""
        run, caches = self.start(files, **options)
        await caches.restore_dependencies()
        await caches.restore_build_folders()
        write(run.workspace, written)
        await caches.save()
        return run, caches


def write(root: Path, files: dict[str, str]) -> None:
    for name, content in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(content)


def log_of(run: BuildRun) -> str:
    return run.logs.text()  # type: ignore[attr-defined]


@pytest.fixture
async def builds(
    make_settings: Callable[..., Settings],
    redis: aioredis.Redis,
    docker_client: docker.DockerClient,
    tmp_path: Path,
) -> AsyncIterator[CachedBuilds]:
    settings = make_settings(build_user=f"{os.getuid()}:{os.getgid()}")
    async with running_server(create_storage_app(settings, consume_logs=False)) as base:
        settings.storage_url = base
        async with httpx.AsyncClient() as http:
            storage = StorageClient(http, settings)
            index = CacheIndex(redis)
            yield CachedBuilds(
                BuildCaches(settings, storage, index, docker_client), index, storage, tmp_path
            )


async def test_second_build_of_one_lockfile_restores_the_download_cache_as_a_hit(
    builds: CachedBuilds,
) -> None:
    lock = {"package-lock.json": '{"lockfileVersion": 3}'}
    first, _ = await builds.build(lock, {NPM_FILE: "tarball"})
    [miss] = first.caches
    assert (miss.kind, miss.result) == ("dependencies", "miss")
    assert miss.save_seconds is not None and miss.size_bytes > 0
    assert f"Dependency cache: saved key {miss.key}" in log_of(first)

    second, caches = builds.start(lock)
    await caches.restore_dependencies()

    assert (second.workspace / NPM_FILE).read_text() == "tarball"
    [hit] = second.caches
    assert (hit.kind, hit.key, hit.result, hit.size_bytes) == (
        "dependencies",
        miss.key,
        "hit",
        miss.size_bytes,
    )
    assert caches.env["npm_config_cache"] == f"/workspace/{CACHE_ROOT}/deps/npm"
    assert caches.env["npm_config_prefer_offline"] == "true"
    assert f"Dependency cache: hit, key {miss.key} (package-lock.json)" in log_of(second)
    await caches.save()
    assert hit.save_seconds is None  # the key was there: nothing saved again
    assert len(await builds.index.entries(PROJECT, "dependencies")) == 1


async def test_changed_lockfile_restores_the_newest_cache_of_the_image_as_partial(
    builds: CachedBuilds,
) -> None:
    first, _ = await builds.build({"package-lock.json": "v1"}, {NPM_FILE: "old tarballs"})

    second, _ = await builds.build({"package-lock.json": "v2"}, {})

    [partial] = second.caches
    assert partial.result == "partial"
    assert partial.key != first.caches[0].key
    assert (second.workspace / NPM_FILE).read_text() == "old tarballs"
    assert partial.save_seconds is not None  # a new key is saved
    assert "Dependency cache: partial" in log_of(second)
    assert len(await builds.index.entries(PROJECT, "dependencies")) == 2

    other_image, _ = await builds.build(
        {"package-lock.json": "v2"}, {}, image="docker.io/library/node:22"
    )
    assert other_image.caches[0].result == "miss"


async def test_two_builds_saving_one_cache_at_once_one_saves_and_the_other_skips(
    builds: CachedBuilds,
) -> None:
    lock = {"package-lock.json": '{"same": true}'}
    runs = [builds.start(lock) for _ in range(2)]
    for number, (run, caches) in enumerate(runs):
        await caches.restore_dependencies()
        write(run.workspace, {NPM_FILE: f"downloads of build {number} " * 50_000})

    await asyncio.gather(*(caches.save() for _, caches in runs))

    saved = [run for run, _ in runs if run.caches[0].save_seconds is not None]
    skipped = [run for run, _ in runs if run.caches[0].save_seconds is None]
    assert len(saved) == 1 and len(skipped) == 1
    assert "Dependency cache: not saved" in log_of(skipped[0])
    third, caches = builds.start(lock)
    await caches.restore_dependencies()
    assert third.caches[0].result == "hit"
    restored = (third.workspace / NPM_FILE).read_text()
    assert restored == (saved[0].workspace / NPM_FILE).read_text()


async def test_incremental_folders_come_from_the_branch_else_from_production(
    builds: CachedBuilds,
) -> None:
    folders = (".next/cache",)
    main, _ = await builds.build({}, {".next/cache/state": "main 1"}, folders=folders)
    assert main.caches[0].result == "miss" and main.caches[0].save_seconds is not None

    preview, caches = builds.start({}, branch="feature", production=False, folders=folders)
    await caches.restore_build_folders()
    assert preview.caches[0].result == "partial"
    assert (preview.workspace / ".next/cache/state").read_text() == "main 1"
    write(preview.workspace, {".next/cache/state": "feature 1"})
    await caches.save()

    again, _ = await builds.build({}, {}, branch="feature", production=False, folders=folders)
    assert again.caches[0].result == "hit"
    assert (again.workspace / ".next/cache/state").read_text() == "feature 1"

    production, caches = builds.start({}, folders=folders)
    await caches.restore_build_folders()
    assert production.caches[0].result == "hit"
    assert (production.workspace / ".next/cache/state").read_text() == "main 1"
    await caches.save()
    # Each branch keeps its newest incremental cache only.
    entries = await builds.index.entries(PROJECT, "incremental")
    assert sorted((e.branch, e.build_id) for e in entries) == [
        ("feature", again.build_id),
        ("main", production.build_id),
    ]


async def test_production_never_restores_what_a_preview_branch_saved(
    builds: CachedBuilds,
) -> None:
    lock = {"package-lock.json": "v1"}
    await builds.build(lock, {NPM_FILE: "from a pull request"}, branch="pr", production=False)

    production, _ = await builds.build(lock, {})

    assert production.caches[0].result == "miss"
    assert not (production.workspace / NPM_FILE).exists()


async def test_a_cache_storage_lost_is_a_miss_and_the_build_goes_on(
    builds: CachedBuilds,
) -> None:
    lock = {"package-lock.json": "v1"}
    await builds.build(lock, {NPM_FILE: "tarball"})
    await builds.storage.delete_project_caches(PROJECT)

    run, _ = await builds.build(lock, {NPM_FILE: "tarball"})

    assert run.caches[0].result == "miss"
    assert run.caches[0].save_seconds is not None  # saved again
    assert len(await builds.index.entries(PROJECT)) == 1


async def test_caches_beyond_the_project_limit_go_least_recently_used_first(
    builds: CachedBuilds,
) -> None:
    builds.caches.settings.cache_max_bytes = 1024 * 1024
    for version in range(3):
        lock = {"package-lock.json": f"v{version}"}
        await builds.build(lock, {NPM_FILE: os.urandom(500_000).hex()})

    entries = await builds.index.entries(PROJECT, "dependencies")
    assert [e.build_id for e in entries] == ["b_build003"]
    assert sum(e.size_bytes for e in entries) <= 1024 * 1024


def test_dependency_key_follows_the_lockfiles_and_the_image(tmp_path: Path) -> None:
    assert dependency_key(tmp_path, IMAGE) is None
    (tmp_path / "package-lock.json").write_text("v1")
    (tmp_path / "requirements-dev.txt").write_text("pytest")
    first = dependency_key(tmp_path, IMAGE)
    assert first is not None
    assert first.lockfiles == ("package-lock.json", "requirements-dev.txt")
    assert dependency_key(tmp_path, "docker.io/library/node:22") != first
    (tmp_path / "package-lock.json").write_text("v2")
    assert dependency_key(tmp_path, IMAGE) != first
    assert first.key("production").startswith("production-")


def test_packing_a_cache_never_follows_a_link(tmp_path: Path) -> None:
    secret = tmp_path / "host-secret"
    secret.write_text("host data")
    workspace = tmp_path / "workspace"
    write(workspace, {".next/cache/ok": "fine"})
    (workspace / ".next/cache/link").symlink_to(secret)
    (workspace / "elsewhere").symlink_to(tmp_path)

    packed = pack_folders(workspace, [".next/cache", "elsewhere"], tmp_path / "cache.tar.gz")

    assert packed is not None and packed.files == 1
    target = tmp_path / "restored"
    target.mkdir()
    with pytest.raises(CacheArchiveError):
        # The link points outside the destination: the `data` filter refuses it.
        unpack_folders(packed.path, target, [".next/cache"])
    assert b"host data" not in packed.path.read_bytes()


def test_unpacking_never_writes_through_a_link_of_the_repository(tmp_path: Path) -> None:
    source = tmp_path / "source"
    write(source, {".next/cache/state": "cached"})
    packed = pack_folders(source, [".next/cache"], tmp_path / "cache.tar.gz")
    assert packed is not None
    outside = tmp_path / "outside"
    outside.mkdir()
    workspace = tmp_path / "workspace"
    workspace.mkdir()
    (workspace / ".next").symlink_to(outside)

    with pytest.raises(CacheArchiveError):
        unpack_folders(packed.path, workspace, [".next/cache"])

    assert list(outside.iterdir()) == []


def test_gobuild_toml_names_cache_folders_and_a_dockerfile() -> None:
    config = parse_repo_config(
        {"cache": [".next/cache", "./node_modules/.vite/"], "dockerfile": "ci/build.Dockerfile"}
    )
    assert config.cache == (".next/cache", "node_modules/.vite")
    assert config.dockerfile == "ci/build.Dockerfile"
    for bad in (["../up"], ["."], [".git/x"], [".gobuild-cache"], "x", [1]):
        with pytest.raises(RepoConfigError, match="cache"):
            parse_repo_config({"cache": bad})
    with pytest.raises(RepoConfigError, match="dockerfile"):
        parse_repo_config({"dockerfile": "/etc/Dockerfile"})


async def test_a_monorepo_folder_keeps_its_caches_in_its_own_folder(builds: CachedBuilds) -> None:
    files = {"apps/web/package-lock.json": "v1"}
    written = {NPM_FILE: "tarball", "apps/web/.next/cache/state": "web"}
    await builds.build(files, written, root_dir="apps/web", folders=(".next/cache",))

    run, caches = builds.start(files, root_dir="apps/web", folders=(".next/cache",))
    await caches.restore_dependencies()
    await caches.restore_build_folders()

    assert [use.result for use in run.caches] == ["hit", "hit"]
    assert (run.workspace / "apps/web/.next/cache/state").read_text() == "web"
    assert (run.workspace / NPM_FILE).read_text() == "tarball"


async def test_a_cache_folder_a_step_turned_into_a_link_is_not_saved(
    builds: CachedBuilds, tmp_path: Path
) -> None:
    host = tmp_path / "host"
    write(host, {"deps/secret": "host data", ".next/cache/secret": "host data"})
    run, caches = builds.start({"package-lock.json": "v1"}, folders=(".next/cache",))
    await caches.restore_dependencies()
    await caches.restore_build_folders()
    # What a malicious step could leave behind: the cache folders as links to the host.
    (run.workspace / CACHE_ROOT).symlink_to(host)
    (run.workspace / ".next").symlink_to(host / ".next")

    await caches.save()

    assert [use.save_seconds for use in run.caches] == [None, None]
    assert "nothing to save" in log_of(run)
    assert await builds.index.entries(PROJECT) == []
