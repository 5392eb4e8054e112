"""Run one build step in a locked-down Docker container and stream its output line by line.

The container has no capabilities, no new privileges, no Docker socket, limits on memory (no
swap), CPU and processes, and runs as the configured build user. It is killed at the deadline
or when the build is cancelled, and removed on every path out of `run_step`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import os
import re
import secrets
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import docker
import docker.errors
from docker.models.containers import Container

log = logging.getLogger(__name__)

Stream = Literal["stdout", "stderr"]
LineCallback = Callable[[Stream, str], Awaitable[None]]

WORKDIR = "/workspace"
LABEL_BUILD_ID = "gobuild.build_id"
LABEL_BUILDER_ID = "gobuild.builder_id"
LABEL_STEP = "gobuild.step"
# A line longer than this is cut into pieces so one line cannot exhaust memory or a log chunk.
MAX_LINE_BYTES = 16 * 1024
# How many output pieces may wait for the log writer before the container's output is held back.
_QUEUE_SIZE = 1024
# After a kill, how long the remaining output may take to arrive.
_DRAIN_SECONDS = 10.0
_DOCKER_CALL_SECONDS = 60.0
_NAME_UNSAFE = re.compile(r"[^a-zA-Z0-9_.-]")


class ContainerError(RuntimeError):
    """The step could not be run (no such image, engine error); safe to show in the build log."""


@dataclass(frozen=True)
class StepSpec:
    """What to run and under which limits."""

    image: str
    command: str
    workspace: Path
    env: Mapping[str, str] = field(default_factory=dict)
    memory_mb: int = 2048
    cpus: float = 1.0
    pids_limit: int = 512
    user: str = "1000:1000"
    network: str = "bridge"
    labels: Mapping[str, str] = field(default_factory=dict)
    name_hint: str = "step"


@dataclass(frozen=True)
class StepResult:
    exit_code: int | None
    oom_killed: bool = False
    timed_out: bool = False
    cancelled: bool = False
    duration_seconds: float = 0.0

    @property
    def succeeded(self) -> bool:
        return self.exit_code == 0 and not (self.oom_killed or self.timed_out or self.cancelled)


def parse_user(user: str) -> tuple[int, int]:
    """`uid:gid` or `uid` (numeric only: the host has to hand the workspace over)."""
    uid, _, gid = user.partition(":")
    if not uid.isdigit() or (gid and not gid.isdigit()):
        raise ContainerError(f"build user must be numeric 'uid:gid', not {user!r}")
    return int(uid), int(gid or uid)


def _chown_tree(root: Path, uid: int, gid: int) -> None:
    os.lchown(root, uid, gid)
    for folder, dirs, files in os.walk(root):
        for name in (*dirs, *files):
            os.lchown(os.path.join(folder, name), uid, gid)


async def hand_workspace_to(workspace: Path, user: str) -> None:
    """Make the build user own the workspace so the step can write into it."""
    uid, gid = parse_user(user)
    if os.geteuid() == 0:
        await asyncio.to_thread(_chown_tree, workspace, uid, gid)
    elif (os.geteuid(), os.getegid()) != (uid, gid):
        raise ContainerError(
            f"the builder runs as uid {os.geteuid()} and cannot hand the workspace to build user "
            f"{user}: run the builder as root or set GOBUILD_BUILD_USER="
            f"{os.geteuid()}:{os.getegid()}"
        )


class LineSplitter:
    """Turns arbitrary byte pieces of one stream into complete, decoded lines."""

    def __init__(self) -> None:
        self._pending = bytearray()

    def feed(self, data: bytes) -> list[str]:
        self._pending += data
        lines: list[str] = []
        while True:
            end = self._pending.find(b"\n")
            if end < 0:
                break
            lines.extend(self._cut(bytes(self._pending[:end])))
            del self._pending[: end + 1]
        if len(self._pending) > MAX_LINE_BYTES:
            lines.extend(self._cut(bytes(self._pending)))
            self._pending.clear()
        return lines

    def flush(self) -> list[str]:
        rest, self._pending = bytes(self._pending), bytearray()
        return self._cut(rest) if rest else []

    @staticmethod
    def _cut(raw: bytes) -> list[str]:
        raw = raw.removesuffix(b"\r")
        pieces = [raw[i : i + MAX_LINE_BYTES] for i in range(0, len(raw), MAX_LINE_BYTES)] or [b""]
        return [piece.decode("utf-8", errors="replace") for piece in pieces]


def _container_name(spec: StepSpec) -> str:
    hint = _NAME_UNSAFE.sub("-", f"{spec.labels.get(LABEL_BUILD_ID, 'build')}-{spec.name_hint}")
    return f"gobuild-{hint[:100]}-{secrets.token_hex(4)}"


def _create(client: docker.DockerClient, spec: StepSpec, name: str) -> Container:
    return client.containers.create(
        spec.image,
        ["sh", "-c", spec.command],
        name=name,
        working_dir=WORKDIR,
        volumes={str(spec.workspace): {"bind": WORKDIR, "mode": "rw"}},
        user=spec.user,
        environment=dict(spec.env),
        mem_limit=f"{spec.memory_mb}m",
        memswap_limit=f"{spec.memory_mb}m",
        nano_cpus=int(spec.cpus * 1_000_000_000),
        pids_limit=spec.pids_limit,
        cap_drop=["ALL"],
        security_opt=["no-new-privileges"],
        privileged=False,
        network_mode=spec.network,
        labels=dict(spec.labels),
        init=True,
        stdin_open=False,
        tty=False,
        log_config={"type": "json-file", "config": {"max-size": "10m", "max-file": "1"}},
    )


def _remove(client: docker.DockerClient, container: Container | None, name: str) -> None:
    """Force-remove the container (by reference or, if creation was interrupted, by name)."""
    target: Any = container.id if container is not None else name
    try:
        client.api.remove_container(target, force=True, v=True)
    except docker.errors.NotFound:
        pass
    except docker.errors.APIError as exc:
        # "removal already in progress" is fine; anything else is worth a line.
        if exc.status_code != 409:
            log.warning("could not remove container %s: %s", target, exc)


def _kill(container: Container) -> None:
    with contextlib.suppress(docker.errors.NotFound, docker.errors.APIError):
        container.kill()


def _pump(
    frames: Iterator[tuple[bytes | None, bytes | None]],
    loop: asyncio.AbstractEventLoop,
    queue: asyncio.Queue[tuple[Stream, bytes] | None],
    stop: threading.Event,
) -> None:
    """Thread body: move demultiplexed output frames into the asyncio queue, then a None."""

    def put(item: tuple[Stream, bytes] | None) -> bool:
        future = asyncio.run_coroutine_threadsafe(queue.put(item), loop)
        while True:
            try:
                future.result(timeout=0.5)
                return True
            except concurrent.futures.TimeoutError:
                if stop.is_set():
                    future.cancel()
                    return False

    try:
        for out, err in frames:
            if stop.is_set():
                return
            if out and not put(("stdout", out)):
                return
            if err and not put(("stderr", err)):
                return
    except Exception as exc:  # the socket closes under us when the container is removed
        if not stop.is_set():
            log.debug("container output stream ended: %s", exc)
    finally:
        with contextlib.suppress(RuntimeError):  # the loop may already be closed
            put(None)


async def _forward_lines(
    queue: asyncio.Queue[tuple[Stream, bytes] | None], on_line: LineCallback
) -> None:
    splitters: dict[Stream, LineSplitter] = {"stdout": LineSplitter(), "stderr": LineSplitter()}
    while True:
        item = await queue.get()
        if item is None:
            break
        stream, data = item
        for line in splitters[stream].feed(data):
            await on_line(stream, line)
    for stream, splitter in splitters.items():
        for line in splitter.flush():
            await on_line(stream, line)


async def _call(func: Callable[..., Any], *args: Any, seconds: float = _DOCKER_CALL_SECONDS) -> Any:
    return await asyncio.wait_for(asyncio.to_thread(func, *args), seconds)


def _image_present(client: docker.DockerClient, image: str) -> bool:
    try:
        client.images.get(image)
    except docker.errors.ImageNotFound:
        return False
    return True


async def ensure_image(
    client: docker.DockerClient,
    image: str,
    *,
    pull_policy: str,
    timeout: float,
    on_pull: Callable[[str], Awaitable[None]],
) -> None:
    """Make sure the engine has `image`, pulling it if the policy allows; else ContainerError."""
    if await _call(_image_present, client, image):
        return
    if pull_policy == "never":
        raise ContainerError(f"image {image!r} is not available on this builder (pulling is off)")
    await on_pull(f"Pulling image {image}")
    try:
        await _call(client.images.pull, image, seconds=timeout)
    except TimeoutError:
        raise ContainerError(f"pulling image {image!r} took longer than {timeout:.0f} s") from None
    except docker.errors.APIError as exc:
        raise ContainerError(
            f"image {image!r} is not available on this builder and could not be pulled: "
            f"{exc.explanation or exc}"
        ) from None


async def run_step(
    client: docker.DockerClient,
    spec: StepSpec,
    *,
    on_line: LineCallback,
    deadline: float | None = None,
    cancel: asyncio.Event | None = None,
) -> StepResult:
    """Run `spec.command` with `sh -c`; `deadline` is in `loop.time()` terms.

    Output lines reach `on_line` in the order the container wrote them. The container is
    killed at the deadline or when `cancel` is set, and always removed before returning.
    """
    loop = asyncio.get_running_loop()
    started = time.monotonic()
    name = _container_name(spec)
    container: Container | None = None
    stop_pump = threading.Event()
    frames: Any = None
    try:
        try:
            container = await _call(_create, client, spec, name)
        except docker.errors.ImageNotFound:
            raise ContainerError(f"image {spec.image!r} is not available on this builder") from None
        except docker.errors.APIError as exc:
            raise ContainerError(f"could not create the container: {exc.explanation}") from None
        assert container is not None
        # Attach before start so not a byte of output is missed.
        frames = await _call(
            lambda: client.api.attach(
                container.id, stdout=True, stderr=True, stream=True, demux=True
            )
        )
        queue: asyncio.Queue[tuple[Stream, bytes] | None] = asyncio.Queue(_QUEUE_SIZE)
        # A thread of its own (not the default executor): it blocks for as long as the step runs.
        threading.Thread(
            target=_pump, args=(frames, loop, queue, stop_pump), name=f"pump-{name}", daemon=True
        ).start()
        try:
            await _call(container.start)
        except docker.errors.APIError as exc:
            raise ContainerError(f"could not start the container: {exc.explanation}") from None

        forward = asyncio.ensure_future(_forward_lines(queue, on_line))
        waiters: set[asyncio.Future[Any]] = {forward}
        cancel_wait = asyncio.ensure_future(cancel.wait()) if cancel is not None else None
        if cancel_wait is not None:
            waiters.add(cancel_wait)
        timeout = None if deadline is None else max(0.0, deadline - loop.time())
        timed_out = cancelled = False
        try:
            done, _ = await asyncio.wait(
                waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
            if forward not in done:
                cancelled = cancel_wait is not None and cancel_wait in done
                timed_out = not cancelled
                await _call(_kill, container)
                # What the step wrote before it was killed still belongs in the log.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(forward), _DRAIN_SECONDS)
            if forward.done():
                forward.result()  # an error of `on_line` is the caller's to see
        finally:
            for waiter in waiters:
                waiter.cancel()
        status = await _call(container.wait)
        await _call(container.reload)
        state = container.attrs.get("State", {})
        return StepResult(
            exit_code=int(status.get("StatusCode", state.get("ExitCode", -1))),
            oom_killed=bool(state.get("OOMKilled", False)),
            timed_out=timed_out,
            cancelled=cancelled,
            duration_seconds=time.monotonic() - started,
        )
    finally:
        stop_pump.set()
        # Removal runs in a thread that finishes even if this task is cancelled again.
        removal = asyncio.ensure_future(asyncio.to_thread(_remove, client, container, name))
        try:
            await asyncio.shield(removal)
        finally:
            # Closing the stream ends the pump thread if the removal did not already.
            if frames is not None:
                with contextlib.suppress(Exception):
                    frames.close()


async def remove_build_containers(
    client: docker.DockerClient, build_id: str, builder_id: str | None = None
) -> int:
    """Remove the containers labelled with `build_id` (and `builder_id`, if given); the count."""
    labels = [f"{LABEL_BUILD_ID}={build_id}"]
    if builder_id is not None:
        labels.append(f"{LABEL_BUILDER_ID}={builder_id}")

    def sweep() -> int:
        found = client.containers.list(all=True, filters={"label": labels})
        for container in found:
            _remove(client, container, container.name)
        return len(found)

    return int(await _call(sweep))
