"""The layer cache: a repository's own build environment (`gobuild.toml` `dockerfile = "..."`),
built once per content hash on each builder and reused by the project's later builds.

The build context is the Dockerfile's folder alone, packed by the builder without following a
link and with fixed owners and times, so its hash is the hash of what Docker is given. Base
images follow the image policy (`container.image_source`): trusted ones from the engine's
copies, others pulled fresh. RUN instructions use the build network (never the host's), under
the build's memory limit, and no cache of an earlier build (`nocache`): what is cached is the
finished image, which only this project's builds run, by id. Images no build recorded, or
beyond GOBUILD_LAYER_CACHE_MAX_BYTES (least recently used first), are removed.

With extra CA trust (GOBUILD_BUILD_CA_BUNDLE), RUN instructions get it as build steps do (`npm
ci` behind a TLS-inspecting proxy). The engine's builder (the classic one: the API offers
BuildKit's secret mounts only through a client session) mounts nothing into RUN, so the
Dockerfile Docker is given starts each stage with the CA files copied from a small local image
(`COPY --from`: no file is added to the build context) and ARGs pointing the tools at them;
unlike ENV, ARGs are not kept in the image. Steps mount the same files at the same paths, so
the image means what it meant.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import logging
import os
import re
import stat
import tarfile
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TypeVar

import docker
import docker.errors
from docker.models.images import Image

from gobuild.builder_agent.build_run import BuildRun
from gobuild.builder_agent.ca_trust import NO_EXTRA_TRUST, BuildCaTrust
from gobuild.builder_agent.cache_archive import contained_folder, size_text
from gobuild.builder_agent.container import ContainerError, ensure_image, image_source
from gobuild.platform.cache_records import CacheEntry
from gobuild.platform.config import Settings
from gobuild.platform.events import CacheUse
from gobuild.platform.stores.caches import CacheIndex
from gobuild.platform.waiting import wait_within

log = logging.getLogger(__name__)
T = TypeVar("T")

LAYER_REPOSITORY = "gobuild/layer-cache"
LABEL_LAYER_PROJECT = "gobuild.layer-cache.project"
LABEL_LAYER_KEY = "gobuild.layer-cache.key"
MAX_DOCKERFILE_BYTES = 256 * 1024
MAX_CONTEXT_BYTES = 256 * 1024 * 1024
MAX_CONTEXT_FILES = 20_000
# The image of the builder's extra CA files, which Dockerfile builds copy them from.
CA_TRUST_REPOSITORY = "gobuild/build-ca"
LABEL_CA_TRUST = "gobuild.build-ca"
_FROM = re.compile(r"^\s*FROM\s+(.*)$", re.IGNORECASE)
_FROM_START = re.compile(r"^\s*FROM(\s|$)", re.IGNORECASE)
_ESCAPE_DIRECTIVE = re.compile(r"^#\s*escape\s*=\s*(\S)\s*$", re.IGNORECASE)
_DIRECTIVE = re.compile(r"^#\s*[a-zA-Z]+\s*=")
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


def _escape_character(dockerfile: str) -> str:
    """The line continuation character: `\\`, or what an `# escape=` parser directive says."""
    for line in dockerfile.splitlines():
        match = _ESCAPE_DIRECTIVE.match(line.strip())
        if match:
            return match.group(1)
        if not _DIRECTIVE.match(line.strip()):
            break  # directives come first, before any comment, blank line or instruction
    return "\\"


def trusting_dockerfile(dockerfile: str, ca_image: str, trust: BuildCaTrust) -> str:
    """`dockerfile` with, after each FROM (but `FROM scratch`), the extra CA files copied from
    `ca_image` to where steps mount them and an ARG for each variable of `trust.env`."""
    folders = sorted({str(PurePosixPath(inside).parent) for inside in trust.mounts.values()})
    added = [f"COPY --from={ca_image} {folder}/ {folder}/" for folder in folders]
    added += [f"ARG {name}={value}" for name, value in sorted(trust.env.items())]
    escape = _escape_character(dockerfile)
    result: list[str] = []
    from_words: list[str] | None = None  # the words of the FROM instruction being read
    continued = False  # the instruction goes on on the next line
    for line in dockerfile.splitlines():
        result.append(line)
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue  # blank lines and comments, also inside an instruction
        if not continued:
            from_words = [] if _FROM_START.match(stripped) else None
        continued = stripped.endswith(escape)
        if from_words is None:
            continue
        from_words.extend(stripped.removesuffix(escape).split() if continued else stripped.split())
        if not continued:
            image = [word for word in from_words[1:] if not word.startswith("--")]
            if image and image[0].lower() != "scratch":
                result.extend(added)
            from_words = None
    return "\n".join(result) + "\n"


def _normalized(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.mtime = 0
    info.mode = 0o755 if info.isdir() or info.mode & 0o111 else 0o644
    return info


def pack_context(folder: Path, archive: Path, replaced: Mapping[str, bytes] | None = None) -> str:
    """Write the folder as a build context (tar, fixed owners and times, links as links, no
    `.git`) to `archive` (blocking), the files named in `replaced` (relative paths) with the
    content given there instead of their own; its sha256."""
    replaced = replaced or {}
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
                if info.isfile() and info.name in replaced:
                    info.size = len(replaced[info.name])
                    tar.addfile(info, io.BytesIO(replaced[info.name]))
                elif info.isfile():
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

    def __init__(
        self,
        settings: Settings,
        client: docker.DockerClient,
        index: CacheIndex,
        ca_trust: BuildCaTrust = NO_EXTRA_TRUST,
    ) -> None:
        self.settings = settings
        self.docker = client
        self.index = index
        self.ca_trust = ca_trust
        self._ca_image_lock = asyncio.Lock()
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
        name = PurePosixPath(dockerfile).name
        replaced: dict[str, bytes] = {}
        if self.ca_trust.extra_certificates:
            ca_image = await self._ca_image()
            replaced[name] = trusting_dockerfile(text, ca_image, self.ca_trust).encode()
            await logs.system(
                f"{dockerfile}: RUN instructions trust the builder's extra CA certificates "
                "(GOBUILD_BUILD_CA_BUNDLE)"
            )
        context = run.archive.with_name(f"{run.archive.name}.context.tar")
        try:
            digest = await asyncio.to_thread(pack_context, folder, context, replaced)
            key = hashlib.sha256("\n".join([digest, name, *base_ids]).encode()).hexdigest()[:40]
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
                image_id, size = await self._build(run, context, name, tag, key, memory_mb)
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

    async def _ca_image(self) -> str:
        """The tag of the image holding the extra CA files where steps mount them, built on
        this engine when it is not there (a changed bundle is another tag)."""

        def ensure() -> str:
            files = {
                inside.lstrip("/"): Path(host).read_bytes()
                for host, inside in self.ca_trust.mounts.items()
            }
            hasher = hashlib.sha256()
            for inside, data in sorted(files.items()):
                hasher.update(f"{inside}\n{len(data)}\n".encode() + data)
            digest = hasher.hexdigest()
            tag = f"{CA_TRUST_REPOSITORY}:{digest[:24]}"
            try:
                self.docker.images.get(tag)
                return tag
            except docker.errors.ImageNotFound:
                pass
            files["Dockerfile"] = b"FROM scratch\nCOPY etc/ /etc/\n"
            packed = io.BytesIO()
            with tarfile.open(fileobj=packed, mode="w") as tar:
                for inside, data in sorted(files.items()):
                    info = tarfile.TarInfo(inside)
                    info.size, info.mode = len(data), 0o644
                    tar.addfile(info, io.BytesIO(data))
            packed.seek(0)
            for event in self.docker.api.build(
                fileobj=packed,
                custom_context=True,
                tag=tag,
                rm=True,
                forcerm=True,
                pull=False,
                labels={LABEL_CA_TRUST: digest},
                decode=True,
            ):
                error = event.get("error") or (event.get("errorDetail") or {}).get("message")
                if error:
                    raise LayerCacheError(f"the image of the extra CA certificates: {error}")
            return tag

        async with self._ca_image_lock:
            try:
                return await self._call(ensure)
            except (docker.errors.APIError, OSError) as exc:
                detail = exc.explanation if isinstance(exc, docker.errors.APIError) else exc
                raise LayerCacheError(
                    f"the image of the extra CA certificates: {detail or exc}"
                ) from None

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
        return await wait_within(asyncio.to_thread(func), _DOCKER_SECONDS)
