"""Run one build step in a locked-down Docker container and stream its output line by line.

The container has no capabilities, no new privileges, no Docker socket, limits on memory (no
swap), CPU and processes, and runs as the configured build user. It is killed at the deadline
or when the build is cancelled, and removed on every path out of `run_step`. A step may also
run in an exec session's container (`run_step_in`): the build's clone container, kept for its
steps when they need nothing else, so a build starts one container instead of two.
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
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Collection,
    Iterator,
    Mapping,
    Sequence,
)
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import docker
import docker.errors
from docker.models.containers import Container
from docker.utils import parse_repository_tag

from gobuild.platform.waiting import wait_within

if TYPE_CHECKING:
    from gobuild.builder_agent.held_exec import HeldExec

log = logging.getLogger(__name__)

Stream = Literal["stdout", "stderr"]
LineCallback = Callable[[Stream, str], Awaitable[None]]

WORKDIR = "/workspace"
LABEL_BUILD_ID = "gobuild.build_id"
LABEL_BUILDER_ID = "gobuild.builder_id"
LABEL_STEP = "gobuild.step"
# A line is kept up to this many bytes and the rest of it, up to its newline, is dropped, so one
# line cannot exhaust memory; the build log cuts lines shorter still and marks the cut.
MAX_LINE_BYTES = 64 * 1024
# How many output pieces may wait for the log writer before the container's output is held back.
_QUEUE_SIZE = 1024
# After a kill, how long the remaining output may take to arrive.
_DRAIN_SECONDS = 10.0
# After an exec'd step's command ended, how long its output may take to end (a process it left
# in the background may keep it open; what that process writes later is not the step's).
_AFTER_EXIT_SECONDS = 1.0
# How long an exec's exit code may take to be recorded after its output ended.
_EXIT_CODE_SECONDS = 1.0
_DOCKER_CALL_SECONDS = 60.0
_NAME_UNSAFE = re.compile(r"[^a-zA-Z0-9_.-]")
# Docker's own networks (and `container:<id>`) are used as they are, never created.
DOCKER_NETWORKS = frozenset({"bridge", "host", "none", "default"})
ICC_OPTION = "com.docker.network.bridge.enable_icc"
# Where a build takes its image from: the engine's copy, or a fresh pull from the registry.
ImageSource = Literal["local", "registry"]


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
    # Host folders mounted read-only: host path -> path in the container.
    read_only_mounts: Mapping[str, str] = field(default_factory=dict)
    # Where the command runs: the workspace or a folder of it (a monorepo's `root_dir`).
    workdir: str = WORKDIR
    # Who the container's own process runs as, if not `user`: an exec session's idle process
    # may belong to another user than the commands exec'd in it, which then cannot signal or
    # trace it (a warm container's, see warm_containers.py).
    main_user: str | None = None
    # The container's own command, if not the step's `sh -c command` (an exec session's: an
    # idle process), what it may do besides what any process may (Linux capabilities of a
    # root `main_user`: commands exec'd as another user have none), and host folders mounted
    # writable for it (host path -> path in the container).
    main_argv: tuple[str, ...] | None = None
    main_capabilities: tuple[str, ...] = ()
    main_mounts: Mapping[str, str] = field(default_factory=dict)


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
    """Turns arbitrary byte pieces of one stream into complete, decoded lines. Of a line that
    spans pieces, at most `MAX_LINE_BYTES` are kept; the rest of it is dropped."""

    def __init__(self) -> None:
        self._pending = bytearray()

    def feed(self, data: bytes) -> list[str]:
        first = data.find(b"\n")
        if first < 0:
            self._keep(data)
            return []
        last = data.rfind(b"\n")
        self._keep(data[:first])
        lines = [self._decode(bytes(self._pending))]
        self._pending.clear()
        if last > first:
            # One decode for all the lines between: a newline is never part of a UTF-8
            # sequence, so this is what decoding them one by one would give.
            text = data[first + 1 : last].decode("utf-8", errors="replace")
            between = text.split("\n")
            if "\r" in text:
                between = [line.removesuffix("\r") for line in between]
            lines.extend(between)
        self._keep(data[last + 1 :])
        return lines

    def flush(self) -> list[str]:
        rest, self._pending = bytes(self._pending), bytearray()
        return [self._decode(rest)] if rest else []

    def _keep(self, piece: bytes) -> None:
        room = MAX_LINE_BYTES - len(self._pending)
        if room > 0 and piece:
            self._pending += piece[:room]

    @staticmethod
    def _decode(raw: bytes) -> str:
        return raw.removesuffix(b"\r").decode("utf-8", errors="replace")


def _container_name(spec: StepSpec) -> str:
    hint = _NAME_UNSAFE.sub("-", f"{spec.labels.get(LABEL_BUILD_ID, 'build')}-{spec.name_hint}")
    return f"gobuild-{hint[:100]}-{secrets.token_hex(4)}"


def _create(client: docker.DockerClient, spec: StepSpec, name: str) -> Container:
    return client.containers.create(
        spec.image,
        list(spec.main_argv) if spec.main_argv else ["sh", "-c", spec.command],
        name=name,
        working_dir=spec.workdir,
        volumes={
            str(spec.workspace): {"bind": WORKDIR, "mode": "rw"},
            **{
                path: {"bind": inside, "mode": "ro"}
                for path, inside in spec.read_only_mounts.items()
            },
            **{path: {"bind": inside, "mode": "rw"} for path, inside in spec.main_mounts.items()},
        },
        user=spec.main_user or spec.user,
        environment=dict(spec.env),
        mem_limit=f"{spec.memory_mb}m",
        memswap_limit=f"{spec.memory_mb}m",
        nano_cpus=int(spec.cpus * 1_000_000_000),
        pids_limit=spec.pids_limit,
        cap_drop=["ALL"],
        cap_add=list(spec.main_capabilities) or None,
        security_opt=["no-new-privileges"],
        privileged=False,
        network_mode=spec.network,
        labels=dict(spec.labels),
        init=True,
        stdin_open=False,
        tty=False,
        # The build log is what `run_step` streams from the attached output. A log driver
        # would keep a second copy, and json-file's per-line work costs the engine far more
        # than the build itself when a build floods its output.
        log_config={"type": "none", "config": {}},
    )


def remove_container(client: docker.DockerClient, container: Container | None, name: str) -> None:
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


async def _create_container(
    client: docker.DockerClient, spec: StepSpec, name: str, creating: list[asyncio.Future[Any]]
) -> Container:
    """Create the container; the creation (appended to `creating`) goes on in its thread
    even if the caller is cancelled meanwhile, so `_remove_once_created` can still remove it."""
    creation = asyncio.ensure_future(_call(_create, client, spec, name))
    creating.append(creation)
    return await asyncio.shield(creation)


async def _remove_once_created(
    client: docker.DockerClient,
    creating: list[asyncio.Future[Any]],
    container: Container | None,
    name: str,
) -> None:
    """Remove the container, after its creation ended if the caller was cancelled during it
    (removing it by name before the engine made it would find nothing and leave it)."""
    if container is None and creating:
        with contextlib.suppress(Exception):
            container = await creating[0]
    await asyncio.to_thread(remove_container, client, container, name)


class PendingRemovals:
    """Containers of one build being removed in the background.

    A container whose commands have all returned (an exec session after its block) or that
    has stopped (a step) holds nothing more of the build; the build goes on while the engine
    tears it down (~0.15 s a container) and `wait`s for all of them before it ends.
    """

    def __init__(self) -> None:
        self._pending: set[asyncio.Future[None]] = set()

    def remove(self, client: docker.DockerClient, container: Container | None, name: str) -> None:
        removing = asyncio.to_thread(remove_container, client, container, name)
        removal = asyncio.ensure_future(removing)
        self._pending.add(removal)
        removal.add_done_callback(self._pending.discard)

    async def wait(self) -> None:
        """Until every removal started so far has finished; cancelling the wait leaves them
        running to their end."""
        if not self._pending:
            return
        done = asyncio.gather(*self._pending, return_exceptions=True)
        for result in await asyncio.shield(done):
            if isinstance(result, Exception):
                log.warning("could not remove a container: %r", result)


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
    return await wait_within(asyncio.to_thread(func, *args), seconds)


def _image_present(client: docker.DockerClient, image: str) -> bool:
    try:
        client.images.get(image)
    except docker.errors.ImageNotFound:
        return False
    return True


def normalize_image(image: str) -> str:
    """The full reference of an image name (`node:20` -> `docker.io/library/node:20`), so one
    image spelled two ways compares equal."""
    name, digest_sep, digest = image.strip().partition("@")
    slash = name.rfind("/")
    colon = name.rfind(":")
    tag = ""
    if colon > slash:
        name, tag = name[:colon], name[colon + 1 :]
    first, sep, rest = name.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"):
        registry = "docker.io" if first in ("index.docker.io", "registry-1.docker.io") else first
        path = rest
    else:
        registry, path = "docker.io", name
    if registry == "docker.io" and "/" not in path:
        path = f"library/{path}"
    if digest_sep:
        return f"{registry}/{path}{':' + tag if tag else ''}@{digest}"
    return f"{registry}/{path}:{tag or 'latest'}"


def image_source(image: str, *, pull_policy: str, trusted: Collection[str] | None) -> ImageSource:
    """The image policy: where a build may take `image` from.

    A trusted image is used from the engine's copy ("local"; pulled if missing and the pull
    policy allows). Any other image is pulled fresh ("registry") and never taken from a local
    copy, which may be another project's; with the pull policy "never" it is refused.
    `trusted` None: GoBuild chose the image itself, not a repository.
    """
    if trusted is None:
        return "local"
    if normalize_image(image) in {normalize_image(name) for name in trusted}:
        return "local"
    if pull_policy == "never":
        raise ContainerError(
            f"image {image!r} is not trusted on this builder; trusted: "
            f"{', '.join(sorted(trusted)) or 'none'}"
        )
    return "registry"


def _pull_image(client: docker.DockerClient, image: str) -> str:
    """Pull `image` from its registry; the id of the image pulled."""
    repository, tag = parse_repository_tag(image)
    tag = tag or "latest"
    # The engine reports some failures inside the progress stream, with a 200 answer.
    for event in client.api.pull(repository, tag=tag, stream=True, decode=True):
        error = event.get("error") or (event.get("errorDetail") or {}).get("message")
        if error:
            raise docker.errors.APIError(str(error))
    separator = "@" if tag.startswith("sha256:") else ":"
    return str(client.images.get(f"{repository}{separator}{tag}").id)


async def ensure_image(
    client: docker.DockerClient,
    image: str,
    *,
    pull_policy: str,
    timeout: float,
    on_pull: Callable[[str], Awaitable[None]],
    trusted: Collection[str] | None = None,
) -> str:
    """Make `image` available under the image policy (`image_source`); the reference to run.

    A trusted image runs by its name (pulled first if missing and the policy allows). An
    untrusted one is pulled fresh and runs by the id of the image pulled, so a local image of
    the same name is never used. Raises ContainerError with a message for the build log.
    """
    source = image_source(image, pull_policy=pull_policy, trusted=trusted)
    if source == "local":
        if await _call(_image_present, client, image):
            return image
        if pull_policy == "never":
            raise ContainerError(
                f"image {image!r} is not available on this builder (pulling is off)"
            )
        await on_pull(f"Pulling image {image}")
        failure = f"image {image!r} is not available on this builder and could not be pulled"
    else:
        await on_pull(
            f"Pulling image {image} from its registry (only trusted images are used "
            "from this builder's local copies)"
        )
        failure = f"image {image!r} could not be pulled from its registry"
    try:
        pulled = await _call(_pull_image, client, image, seconds=timeout)
    except TimeoutError:
        raise ContainerError(f"pulling image {image!r} took longer than {timeout:.0f} s") from None
    except docker.errors.APIError as exc:
        raise ContainerError(f"{failure}: {exc.explanation or exc}") from None
    return image if source == "local" else pulled


def _ensure_network(client: docker.DockerClient, name: str) -> bool:
    """Create the network if missing; whether its containers are kept from each other."""
    found = [n for n in client.networks.list(names=[name]) if n.name == name]
    if not found:
        try:
            client.networks.create(
                name,
                driver="bridge",
                options={ICC_OPTION: "false"},
                internal=False,  # builds need the package registries
                check_duplicate=True,
            )
        except docker.errors.APIError as exc:
            if exc.status_code != 409:  # another builder just created it
                raise
        found = [n for n in client.networks.list(names=[name]) if n.name == name]
        # Builders starting at once may each create one: all keep the same one, the others go.
        found.sort(key=lambda network: str(network.id))
        for duplicate in found[1:]:
            with contextlib.suppress(docker.errors.APIError):
                duplicate.remove()
    if not found:
        raise ContainerError(f"the build network {name!r} could not be created")
    return (found[0].attrs.get("Options") or {}).get(ICC_OPTION) == "false"


async def ensure_build_network(client: docker.DockerClient, name: str) -> None:
    """Make sure build containers have their network `name`: created, if missing, as a bridge
    (builds reach the internet) on which containers cannot reach each other. Docker's own
    networks are used as they are."""
    if name in DOCKER_NETWORKS or name.startswith("container:"):
        if name in ("bridge", "default", "host"):
            log.warning(
                "build containers use Docker's %r network, where they can reach each other; "
                "set GOBUILD_BUILD_NETWORK to a network of their own",
                name,
            )
        return
    try:
        isolated = await _call(_ensure_network, client, name)
    except docker.errors.APIError as exc:
        raise ContainerError(
            f"could not create the build network {name!r}: {exc.explanation or exc}"
        ) from None
    if not isolated:
        log.warning(
            "build network %r lets containers reach each other (%s is not false); "
            "builds on it are not isolated from each other",
            name,
            ICC_OPTION,
        )


@dataclass
class _Followed:
    """How following a step's output ended, and when the step began (`time.monotonic()`)."""

    started: float
    timed_out: bool = False
    cancelled: bool = False

    def result(self, exit_code: int, *, oom_killed: bool) -> StepResult:
        return StepResult(
            exit_code=exit_code,
            oom_killed=oom_killed,
            timed_out=self.timed_out,
            cancelled=self.cancelled,
            duration_seconds=time.monotonic() - self.started,
        )


def start_pump(frames: Any, name: str) -> tuple[asyncio.Queue[Any], threading.Event]:
    """The output frames of a container or exec, moved by a thread of their own (not the
    default executor: it blocks for as long as the command runs) into an asyncio queue."""
    queue: asyncio.Queue[tuple[Stream, bytes] | None] = asyncio.Queue(_QUEUE_SIZE)
    stop = threading.Event()
    threading.Thread(
        target=_pump,
        args=(frames, asyncio.get_running_loop(), queue, stop),
        name=f"pump-{name}",
        daemon=True,
    ).start()
    return queue, stop


async def _follow(
    queue: asyncio.Queue[tuple[Stream, bytes] | None],
    container: Container,
    *,
    on_line: LineCallback,
    deadline: float | None,
    cancel: asyncio.Event | None,
    started: float,
    exited: Awaitable[object] | None = None,
) -> _Followed:
    """Forward the output lines until it ends; kill `container` at the deadline or when
    `cancel` is set, and still forward what was written before the kill. With `exited` (the
    command's end), following also stops shortly after the command ended: a process it left
    in the background may hold its output open."""
    loop = asyncio.get_running_loop()
    followed = _Followed(started)
    forward = asyncio.ensure_future(_forward_lines(queue, on_line))
    waiters: set[asyncio.Future[Any]] = {forward}
    cancel_wait = asyncio.ensure_future(cancel.wait()) if cancel is not None else None
    if cancel_wait is not None:
        waiters.add(cancel_wait)
    exit_wait = asyncio.ensure_future(exited) if exited is not None else None
    if exit_wait is not None:
        waiters.add(exit_wait)
    timeout = None if deadline is None else max(0.0, deadline - loop.time())
    try:
        done, _ = await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        if forward not in done and exit_wait is not None and exit_wait in done:
            with contextlib.suppress(TimeoutError):
                await wait_within(asyncio.shield(forward), _AFTER_EXIT_SECONDS)
        elif forward not in done:
            followed.cancelled = cancel_wait is not None and cancel_wait in done
            followed.timed_out = not followed.cancelled
            await _call(_kill, container)
            # What the step wrote before it was killed still belongs in the log.
            with contextlib.suppress(TimeoutError):
                await wait_within(asyncio.shield(forward), _DRAIN_SECONDS)
        if forward.done():
            forward.result()  # an error of `on_line` is the caller's to see
    finally:
        for waiter in waiters:
            waiter.cancel()
    return followed


async def run_step(
    client: docker.DockerClient,
    spec: StepSpec,
    *,
    on_line: LineCallback,
    deadline: float | None = None,
    cancel: asyncio.Event | None = None,
    on_started: Callable[[Container], None] | None = None,
    removals: PendingRemovals | None = None,
) -> StepResult:
    """Run `spec.command` with `sh -c`; `deadline` is in `loop.time()` terms.

    Output lines reach `on_line` in the order the container wrote them. The container is
    killed at the deadline or when `cancel` is set, and always removed: before returning,
    or, once it has stopped and `removals` is given, by `removals` in the background.
    `on_started` is told the container once it runs (to sample its resource use).
    """
    started = time.monotonic()
    name = _container_name(spec)
    container: Container | None = None
    creating: list[asyncio.Future[Any]] = []
    stop_pump: threading.Event | None = None
    frames: Any = None
    stopped = False
    try:
        try:
            container = await _create_container(client, spec, name, creating)
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
        queue, stop_pump = start_pump(frames, name)
        try:
            await _call(container.start)
        except docker.errors.APIError as exc:
            raise ContainerError(f"could not start the container: {exc.explanation}") from None
        if on_started is not None:
            on_started(container)
        followed = await _follow(
            queue, container, on_line=on_line, deadline=deadline, cancel=cancel, started=started
        )
        status = await _call(container.wait)
        stopped = True
        await _call(container.reload)
        state = container.attrs.get("State", {})
        return followed.result(
            int(status.get("StatusCode", state.get("ExitCode", -1))),
            oom_killed=bool(state.get("OOMKilled", False)),
        )
    finally:
        if stop_pump is not None:
            stop_pump.set()
        try:
            if stopped and removals is not None:
                removals.remove(client, container, name)
            else:
                # Removal runs in a thread that finishes even if this task is cancelled again.
                removal = asyncio.ensure_future(
                    _remove_once_created(client, creating, container, name)
                )
                await asyncio.shield(removal)
        finally:
            # Closing the stream ends the pump thread if the removal did not already.
            if frames is not None:
                with contextlib.suppress(Exception):
                    frames.close()


async def run_step_in(
    session: ExecSession,
    spec: StepSpec,
    *,
    on_line: LineCallback,
    deadline: float | None = None,
    cancel: asyncio.Event | None = None,
    on_started: Callable[[Container], None] | None = None,
) -> StepResult:
    """`run_step`, with `spec.command` exec'd in the running container of `session` (the
    build's clone container, kept for its steps) instead of a container of its own: `spec`
    gives the command, user, environment and working folder; the session's container its
    image, limits, mounts and network. At the deadline or on cancel the container is killed
    with the step (the build ends there); the session's owner removes it."""
    started = time.monotonic()
    client, container = session.client, session.container
    stop_pump: threading.Event | None = None
    frames: Any = None
    held = session.take_held()
    try:
        if held is not None and await held.start_step(spec):
            # The checkout held on for this step: it runs in that exec (held_exec.py).
            exec_id, queue, stop_pump = held.exec_id, held.queue, held.stop
        else:
            exec_id, frames = await _start_exec(session, spec)
            queue, stop_pump = start_pump(frames, f"{container.name}-{spec.name_hint}")
        if on_started is not None:
            on_started(container)
        followed = await _follow(
            queue,
            container,
            on_line=on_line,
            deadline=deadline,
            cancel=cancel,
            started=started,
            exited=exec_exit(client, exec_id),
        )
        code = None
        # The engine may record the exit a moment after the output ended.
        with contextlib.suppress(TimeoutError):
            code = await wait_within(exec_exit(client, exec_id, started=True), _EXIT_CODE_SECONDS)
        failed = code != 0 and not (followed.timed_out or followed.cancelled)
        return followed.result(
            -1 if code is None else code,
            # Docker flags only a container's main process as killed for its memory: an exec'd
            # one is looked up in the container's cgroup (a build's first failed step ends it,
            # so any kill beyond the earlier builds' is this step's).
            oom_killed=failed and await _oom_kills(session) > session.oom_kills_before,
        )
    finally:
        if stop_pump is not None:
            stop_pump.set()
        if frames is not None:
            with contextlib.suppress(Exception):
                frames.close()
        if held is not None:
            held.forget()


async def _start_exec(session: ExecSession, spec: StepSpec) -> tuple[str, Any]:
    """`spec.command` exec'd in the session's container: the exec's id and its output."""
    client, container = session.client, session.container
    argv = ["sh", "-c", spec.command]
    try:
        exec_id = await _call(
            create_exec, client, container.id, argv, spec.user, spec.env, spec.workdir
        )
        # The output stream is the exec's own start: not a byte of it is missed.
        frames = await _call(lambda: client.api.exec_start(exec_id, stream=True, demux=True))
    except docker.errors.APIError as exc:
        raise ContainerError(f"could not start the step: {exc.explanation or exc}") from None
    return exec_id, frames


_OOM_KILLS = re.compile(rb"^oom_kill (\d+)$", re.MULTILINE)
# Where a container's memory kills are counted: cgroup v2 `memory.events`, v1 `oom_control`.
OOM_COUNTER_FILES = ("/sys/fs/cgroup/memory.events", "/sys/fs/cgroup/memory/memory.oom_control")


def count_oom_kills(counters: bytes) -> int:
    """The memory kills in the text of `OOM_COUNTER_FILES` (`oom_kill N` lines)."""
    return sum(int(count) for count in _OOM_KILLS.findall(counters))


async def _oom_kills(session: ExecSession) -> int:
    """How many processes of the session's container the kernel killed for its memory limit;
    0 if that cannot be read."""
    argv = ["cat", *OOM_COUNTER_FILES]
    try:
        result = await _call(
            _exec, session.client, session.container.id, argv, session.spec.user, {}
        )
    except docker.errors.APIError:
        return 0
    return count_oom_kills(result.stdout)


async def exec_exit(
    client: docker.DockerClient, exec_id: str, *, started: bool = False
) -> int | None:
    """Return once the exec's command ended, with its exit code (None: it has none, killed
    with its container). Not running and without a code is an exec not started yet, unless
    `started` (its output ended already). Looked up ever less often, at most every second,
    and while it runs first after a quarter of a second: its output's end is what usually
    tells it first (each look costs the engine and this process a call)."""
    delay = 0.02
    if not started:
        delay = 0.25
        await asyncio.sleep(delay)
    while True:
        details = await _call(client.api.exec_inspect, exec_id)
        code = details.get("ExitCode")
        if not details.get("Running") and (code is not None or started):
            return None if code is None else int(code)
        await asyncio.sleep(delay)
        delay = min(delay * 2, 1.0)


async def remove_build_containers(
    client: docker.DockerClient, build_id: str, builder_id: str | None = None
) -> int:
    """Remove the containers labelled with `build_id` (and `builder_id`, if given); the count."""
    labels = [f"{LABEL_BUILD_ID}={build_id}"]
    if builder_id is not None:
        labels.append(f"{LABEL_BUILDER_ID}={builder_id}")
    return await remove_labelled_containers(client, labels)


async def remove_labelled_containers(client: docker.DockerClient, labels: list[str]) -> int:
    """Remove the containers with every one of `labels` (`name` or `name=value`); the count."""

    def sweep() -> int:
        found = client.containers.list(all=True, filters={"label": labels})
        for container in found:
            remove_container(client, container, container.name)
        return len(found)

    return int(await _call(sweep))


# --- Several commands in one container --------------------------------------------------------

# What an exec session's container runs while commands are exec'd in it.
_IDLE_COMMAND = "exec sleep infinity"


@dataclass(frozen=True)
class ExecResult:
    exit_code: int
    stdout: bytes
    stderr: bytes


def _exec(
    client: docker.DockerClient,
    container_id: str,
    argv: Sequence[str],
    user: str,
    env: Mapping[str, str],
) -> ExecResult:
    exec_id = create_exec(client, container_id, argv, user, env, WORKDIR)
    stdout, stderr = client.api.exec_start(exec_id, demux=True)
    code = client.api.exec_inspect(exec_id).get("ExitCode")
    return ExecResult(-1 if code is None else int(code), stdout or b"", stderr or b"")


def create_exec(
    client: docker.DockerClient,
    container_id: str,
    argv: Sequence[str],
    user: str,
    env: Mapping[str, str],
    workdir: str,
    *,
    stdin: bool = False,
) -> str:
    """An exec of `argv` (not started yet) with its output on stdout and stderr, no terminal
    and, unless `stdin`, no input; its id."""
    created = client.api.exec_create(
        container_id,
        list(argv),
        stdout=True,
        stderr=True,
        stdin=stdin,
        tty=False,
        user=user,
        environment=dict(env),
        workdir=workdir,
    )
    return str(created["Id"])


class ExecSession:
    """Commands run one after another (`docker exec`) in one running container: each as the
    spec's user in its workspace, under the container's limits, privileges and network."""

    def __init__(self, client: docker.DockerClient, container: Container, spec: StepSpec) -> None:
        self.client = client
        self.container = container
        self.spec = spec
        # The memory kills its container had before the current build (a warm container's
        # earlier builds'): only more than these are this build's.
        self.oom_kills_before = 0
        # The build's checkout, holding on in this container for its first step (held_exec.py).
        self.held: HeldExec | None = None

    def take_held(self) -> HeldExec | None:
        held, self.held = self.held, None
        return held

    def forget_held(self) -> None:
        """Let a held checkout go (it exits without running anything)."""
        held = self.take_held()
        if held is not None:
            held.forget()

    def release(self, removals: PendingRemovals) -> None:
        """Remove the container of a session that was kept after its block (in the
        background, by `removals`)."""
        self.forget_held()
        removals.remove(self.client, self.container, self.container.name)

    async def run(
        self, argv: Sequence[str], *, env: Mapping[str, str], timeout: float
    ) -> ExecResult:
        """Run `argv` (no shell); TimeoutError after `timeout` seconds (the session's
        container, removed when the session ends, takes the command with it)."""
        try:
            return await wait_within(
                asyncio.to_thread(_exec, self.client, self.container.id, argv, self.spec.user, env),
                timeout,
            )
        except docker.errors.APIError as exc:
            raise ContainerError(f"could not run {argv[0]!r}: {exc.explanation or exc}") from None


@contextlib.asynccontextmanager
async def exec_session(
    client: docker.DockerClient,
    spec: StepSpec,
    *,
    removals: PendingRemovals | None = None,
    keep: Callable[[ExecSession], None] | None = None,
) -> AsyncIterator[ExecSession]:
    """A container made from `spec` (its command aside) that idles until the block ends, for
    commands to be exec'd in; removed on every way out, as `run_step`'s are. When the block
    ends normally (every command has returned), it is handed to `keep` if given (which then
    owns it: `ExecSession.release`), else removed by `removals` in the background if given."""
    name = _container_name(spec)
    container: Container | None = None
    creating: list[asyncio.Future[Any]] = []
    finished = False
    try:
        try:
            idle = replace(spec, command=_IDLE_COMMAND)
            container = await _create_container(client, idle, name, creating)
            assert container is not None
            await _call(container.start)
        except docker.errors.ImageNotFound:
            raise ContainerError(f"image {spec.image!r} is not available on this builder") from None
        except docker.errors.APIError as exc:
            raise ContainerError(f"could not start the container: {exc.explanation}") from None
        session = ExecSession(client, container, spec)
        yield session
        finished = True
    finally:
        if finished and keep is not None:
            keep(session)  # its owner removes it
        elif finished and removals is not None:
            removals.remove(client, container, name)
        else:
            removal = asyncio.ensure_future(_remove_once_created(client, creating, container, name))
            await asyncio.shield(removal)
