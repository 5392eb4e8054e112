"""The layer cache: a repository's own build environment (`gobuild.toml` `dockerfile = "..."`),
built once per content hash on each builder and reused by the project's later builds.

The build context is the Dockerfile's folder alone, packed by the builder without following a
link and with fixed owners and times, so its hash is the hash of what Docker is given. Base
images follow the image policy (`container.image_source`): trusted ones from the engine's
copies, others pulled fresh. RUN instructions use the build network (never the host's), under
the build's memory limit, and no cache of an earlier build (`nocache`): what is cached is the
finished image, which only this project's builds run, by id. Images no build recorded, or
beyond GOBUILD_LAYER_CACHE_MAX_BYTES (least recently used first), are removed.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import re
import stat
import tarfile
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TypeVar

import docker
import docker.errors
from docker.models.images import Image

from gobuild.builder_agent.build_run import BuildRun
from gobuild.builder_agent.cache_archive import contained_folder, size_text
from gobuild.builder_agent.container import ContainerError, ensure_image, image_source
from gobuild.platform.cache_records import CacheEntry
from gobuild.platform.config import Settings
from gobuild.platform.events import CacheUse
from gobuild.platform.stores.caches import CacheIndex

log = logging.getLogger(__name__)
T = TypeVar("T")

LAYER_REPOSITORY = "gobuild/layer-cache"
LABEL_LAYER_PROJECT = "gobuild.layer-cache.project"
LABEL_LAYER_KEY = "gobuild.layer-cache.key"
MAX_DOCKERFILE_BYTES = 256 * 1024
MAX_CONTEXT_BYTES = 256 * 1024 * 1024
MAX_CONTEXT_FILES = 20_000
_FROM = re.compile(r"^\s*FROM\s+(.*)$", re.IGNORECASE)
_DOCKER_SECONDS = 60.0


class LayerCacheError(ContainerError):
    """The repository's Dockerfile cannot be built; safe to show in the build log."""


@dataclass(frozen=True)
class LayerImage:
    """The image the steps run in, and what the layer cache did."""

    image_id: str
    tag: str
    use: CacheUse


def base_images(dockerfile: str) -> list[str]:
    """The images the Dockerfile's stages start from (`scratch` and earlier stages left out)."""
    text = re.sub(r"\\\r?\n", " ", dockerfile)
    stages: set[str] = set()
    images: list[str] = []
    for line in text.splitlines():
        match = _FROM.match(line)
        if not match:
            continue
        words = [word for word in match.group(1).split() if not word.startswith("--")]
        if not words:
            raise LayerCacheError("the Dockerfile has a FROM without an image")
        image = words[0]
        if len(words) >= 3 and words[1].lower() == "as":
            stages.add(words[2].lower())
        if "$" in image:
            raise LayerCacheError(
                f"FROM {image}: build arguments in FROM are not supported; name the image"
            )
        if image.lower() in stages or image == "scratch" or image in images:
            continue
        images.append(image)
    if not images and "scratch" not in text:
        raise LayerCacheError("the Dockerfile has no FROM instruction")
    return images


def _normalized(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.mtime = 0
    info.mode = 0o755 if info.isdir() or info.mode & 0o111 else 0o644
    return info


def pack_context(folder: Path, archive: Path) -> str:
    """Write the folder as a build context (tar, fixed owners and times, links as links, no
    `.git`) to `archive` (blocking); its sha256."""
    files = size = 0
    with tarfile.open(archive, mode="w") as tar:
        for current, dirs, names in os.walk(folder, followlinks=False):
            dirs[:] = sorted(name for name in dirs if name != ".git")
            for name in (*dirs, *sorted(names)):
                path = Path(current, name)
                mode = path.lstat().st_mode
                if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode) or stat.S_ISLNK(mode)):
                    continue
                files += 1
                if stat.S_ISREG(mode):
                    size += path.lstat().st_size
                if files > MAX_CONTEXT_FILES or size > MAX_CONTEXT_BYTES:
                    raise LayerCacheError(
                        f"the Dockerfile's folder is too large to be its build context (over "
                        f"{MAX_CONTEXT_FILES} files or {MAX_CONTEXT_BYTES // 1024**2} MiB): "
                        "give the Dockerfile a folder of its own, e.g. ci/"
                    )
                info = _normalized(
                    tar.gettarinfo(str(path), arcname=path.relative_to(folder).as_posix())
                )
                if info.isfile():
                    with path.open("rb") as content:
                        tar.addfile(info, content)
                else:
                    tar.addfile(info)
    hasher = hashlib.sha256()
    with archive.open("rb") as packed:
        while chunk := packed.read(1024 * 1024):
            hasher.update(chunk)
    return hasher.hexdigest()


def _read_dockerfile(root: Path, relative: str) -> tuple[Path, str]:
    """The Dockerfile's folder (its build context) and its text."""
    pure = PurePosixPath(relative)
    folder = contained_folder(root, str(pure.parent)) if str(pure.parent) != "." else root.resolve()
    if folder is None:
        raise LayerCacheError(f"dockerfile '{relative}': its folder is missing or a link")
    path = folder / pure.name
    if path.is_symlink() or not path.is_file():
        raise LayerCacheError(f"dockerfile '{relative}' is not a regular file of the repository")
    with path.open("rb") as handle:
        data = handle.read(MAX_DOCKERFILE_BYTES + 1)
    if len(data) > MAX_DOCKERFILE_BYTES:
        raise LayerCacheError(f"dockerfile '{relative}' is larger than 256 KiB")
    try:
        return folder, data.decode("utf-8")
    except UnicodeDecodeError:
        raise LayerCacheError(f"dockerfile '{relative}' is not UTF-8 text") from None


class LayerCache:
    """Builds and reuses images from repositories' Dockerfiles on this builder's engine."""

    def __init__(self, settings: Settings, client: docker.DockerClient, index: CacheIndex) -> None:
        self.settings = settings
        self.docker = client
        self.index = index
        # One build of an image at a time on this builder; another build of it waits and reuses.
        self._building: dict[str, asyncio.Lock] = {}

    async def image_for(
        self, run: BuildRun, source: Path, dockerfile: str, memory_mb: int
    ) -> LayerImage:
        """The image built from `dockerfile` (relative to the folder that is built, `source`):
        this builder's copy when the project has one of the same content, else built now."""
        started = time.monotonic()
        request, logs = run.request, run.logs
        folder, text = await asyncio.to_thread(_read_dockerfile, source, dockerfile)
        bases = base_images(text)
        trusted = self.settings.trusted_build_images
        base_ids: list[str] = []
        for base in bases:
            if (
                image_source(base, pull_policy=self.settings.build_pull_policy, trusted=trusted)
                == "local"
            ):
                await self._ensure_base(base, logs.system)
                base_ids.append(await self._call(lambda base=base: self.docker.images.get(base).id))
        context = run.archive.with_name(f"{run.archive.name}.context.tar")
        try:
            digest = await asyncio.to_thread(pack_context, folder, context)
            key = hashlib.sha256(
                "\n".join([digest, PurePosixPath(dockerfile).name, *base_ids]).encode()
            ).hexdigest()[:40]
            tag = f"{LAYER_REPOSITORY}:{request.project_id}-{key}"
            lock = self._building.setdefault(tag, asyncio.Lock())
            async with lock:
                found = await self._cached(request.project_id, key, tag)
                if found is not None:
                    image_id, size = found
                    use = CacheUse(
                        kind="layer",
                        key=key,
                        result="hit",
                        size_bytes=size,
                        restore_seconds=round(time.monotonic() - started, 3),
                    )
                    await logs.system(
                        f"Layer cache: hit, key {key}, image {size_text(size)} (built earlier "
                        f"from {dockerfile})"
                    )
                    return LayerImage(image_id, tag, use)
                await logs.system(f"Layer cache: miss, key {key}; building {dockerfile}")
                for base in bases:
                    await self._ensure_base(base, logs.system)
                build_started = time.monotonic()
                image_id, size = await self._build(
                    run, context, PurePosixPath(dockerfile).name, tag, key, memory_mb
                )
        finally:
            context.unlink(missing_ok=True)
        build_seconds = round(time.monotonic() - build_started, 3)
        await self.index.record(
            CacheEntry(
                project_id=request.project_id,
                kind="layer",
                key=key,
                size_bytes=size,
                sha256=image_id,
                image=tag,
                branch=request.branch,
                production=request.production,
                build_id=request.build_id,
            )
        )
        await logs.system(
            f"Layer cache: saved image {tag} ({size_text(size)}) in {build_seconds:.1f}s"
        )
        await self.prune(keep=tag)
        use = CacheUse(
            kind="layer", key=key, result="miss", size_bytes=size, save_seconds=build_seconds
        )
        return LayerImage(image_id, tag, use)

    async def _ensure_base(self, image: str, say: Callable[[str], Awaitable[None]]) -> None:
        settings = self.settings
        await ensure_image(
            self.docker,
            image,
            pull_policy=settings.build_pull_policy,
            timeout=settings.build_pull_timeout_seconds,
            on_pull=say,
            trusted=settings.trusted_build_images,
        )

    async def _cached(self, project_id: str, key: str, tag: str) -> tuple[str, int] | None:
        """This builder's image of the key, if the project's cache index still has it."""
        entry = await self.index.get(project_id, "layer", key)
        if entry is None:
            return None
        try:
            image = await self._call(lambda: self.docker.images.get(tag))
        except docker.errors.ImageNotFound:
            return None
        labels = image.labels or {}
        if labels.get(LABEL_LAYER_PROJECT) != project_id or labels.get(LABEL_LAYER_KEY) != key:
            return None
        await self.index.touch(entry)
        return str(image.id), int(image.attrs.get("Size") or 0)

    async def _build(
        self, run: BuildRun, context: Path, dockerfile: str, tag: str, key: str, memory_mb: int
    ) -> tuple[str, int]:
        loop = asyncio.get_running_loop()
        stop = threading.Event()
        limit = memory_mb * 1024 * 1024

        def say(line: str) -> None:
            future = asyncio.run_coroutine_threadsafe(run.logs.write("stdout", line), loop)
            with contextlib.suppress(Exception):
                future.result(timeout=30)

        def build() -> tuple[str, int]:
            with context.open("rb") as tar:
                stream = self.docker.api.build(
                    fileobj=tar,
                    custom_context=True,
                    dockerfile=dockerfile,
                    tag=tag,
                    rm=True,
                    forcerm=True,
                    nocache=True,
                    pull=False,
                    network_mode=self.settings.build_network,
                    labels={
                        LABEL_LAYER_PROJECT: run.request.project_id,
                        LABEL_LAYER_KEY: key,
                    },
                    container_limits={"memory": limit, "memswap": limit},
                    decode=True,
                )
                try:
                    for event in stream:
                        if stop.is_set():
                            raise LayerCacheError("the image build was stopped")
                        error = event.get("error") or (event.get("errorDetail") or {}).get(
                            "message"
                        )
                        if error:
                            raise LayerCacheError(
                                f"building the Dockerfile failed: {error.strip()}"
                            )
                        for line in str(event.get("stream") or "").splitlines():
                            if line.strip():
                                say(line)
                finally:
                    with contextlib.suppress(Exception):
                        stream.close()
            image = self.docker.images.get(tag)
            return str(image.id), int(image.attrs.get("Size") or 0)

        try:
            return await asyncio.to_thread(build)
        except docker.errors.APIError as exc:
            raise LayerCacheError(
                f"building the Dockerfile failed: {exc.explanation or exc}"
            ) from None
        finally:
            stop.set()

    async def prune(self, keep: str | None = None) -> int:
        """Remove layer images no project's cache index has, then the least recently used
        beyond GOBUILD_LAYER_CACHE_MAX_BYTES; how many went."""
        images = await self._call(
            lambda: self.docker.images.list(filters={"label": LABEL_LAYER_KEY})
        )
        kept: list[tuple[float, int, Image]] = []
        doomed: list[Image] = []
        for image in images:
            labels = image.labels or {}
            if keep is not None and keep in image.tags:
                continue
            if not image.tags:  # replaced by a rebuild of its key
                doomed.append(image)
                continue
            entry = await self.index.get(
                labels.get(LABEL_LAYER_PROJECT, ""), "layer", labels.get(LABEL_LAYER_KEY, "")
            )
            if entry is None:
                doomed.append(image)
            else:
                size = int(image.attrs.get("Size") or 0)
                kept.append((entry.last_used_at.timestamp(), size, image))
        total = sum(size for _, size, _ in kept)
        if keep is not None:
            with contextlib.suppress(docker.errors.ImageNotFound):
                current = await self._call(lambda: self.docker.images.get(keep))
                total += int(current.attrs.get("Size") or 0)
        for _, size, image in sorted(kept, key=lambda item: item[0]):
            if total <= self.settings.layer_cache_max_bytes:
                break
            doomed.append(image)
            total -= size
        removed = 0
        for image in doomed:
            try:
                await self._call(lambda image=image: self.docker.images.remove(image.id))
                removed += 1
            except docker.errors.APIError as exc:  # in use by a running build, or gone
                log.info("layer image %s not removed: %s", image.short_id, exc)
        return removed

    @staticmethod
    async def _call(func: Callable[[], T]) -> T:
        return await asyncio.wait_for(asyncio.to_thread(func), _DOCKER_SECONDS)
