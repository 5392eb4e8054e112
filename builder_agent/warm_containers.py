"""Warm containers: a build's clone container, kept after the build for the next build of the
same project (GOBUILD_BUILD_CONTAINER_REUSE_SECONDS).

Starting a container on the build network is most of what a small build costs this builder
(its network, file system and cgroup are set up and torn down each time); a `docker exec` in a
running one costs a fraction of it. So once a build is over, its container is made as good as
new and kept, idle, for a while: the next build of the same project, with the same image,
limits, network and mounts, checks out and runs its steps in it.

Made as good as new, in two halves, so that it costs no `docker exec` of its own:
- when the build ends, every process of the build user is killed by the container's keeper:
  its own process, root with no capability but CAP_KILL, which the build user can neither
  signal nor trace. The builder signals it (SIGUSR1); it kills until none is left, reaped
  too, and reports it in a file of a folder only root may enter (mounted from the host).
  Then the builder empties the workspace (on the host);
- when the next build takes it, the first lines of its checkout, as the build user, before
  git runs: the folders of the image's file system the build user may write to (found once
  per image by `find -writable` as that user), /dev/shm and /dev/mqueue are emptied, its
  System V IPC objects removed, and the container's memory-kill count read, so the build's
  out-of-memory check counts only its own kills (`CLEAN_FIRST`). What is left by then can
  only be files and IPC objects, nothing that runs: no process of an earlier build sees the
  checkout's credentials or touches its commit.
If any of this fails (the container was killed, a process survives, a file stays, the image
has a file the build user may write to) the container is removed instead, and a build that
found it so checks out in a new one.

A warm container never goes to another project: projects are the boundary between tenants,
and builds of one project already share its dependency caches. It is removed after
`keep_seconds` idle, after `max_uses` builds and when the builder stops; a builder that
crashed removes its leftovers when it starts again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import secrets
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import docker

from gobuild.builder_agent.container import (
    LABEL_BUILDER_ID,
    OOM_COUNTER_FILES,
    ExecSession,
    StepSpec,
    parse_user,
    remove_container,
    remove_labelled_containers,
)
from gobuild.platform.waiting import cancel_and_wait, wait_within

log = logging.getLogger(__name__)

LABEL_WARM = "gobuild.warm"
# The user a warm container's own process runs as: not the build user.
MAIN_USER = "0:0"
FOLDER_PREFIX = "warm-"
_NAME_UNSAFE = re.compile(r"[^a-zA-Z0-9_.-]")
# Mounted by Docker in every container, writable by anyone.
_SHARED_MEMORY = ("/dev/shm", "/dev/mqueue")
# Where a warm container's keeper reports, inside it (a host folder only root may enter).
KEEPER_MOUNT = "/run/gobuild-keeper"
KEEPER_SUFFIX = ".keeper"
# What the keeper may do besides what any process may: signal the build user's processes.
KEEPER_CAPABILITIES = ("KILL",)
_KILL_SECONDS = 30.0
# How long a build waits for a container of its key that is being given back.
_RETURN_WAIT_SECONDS = 2.0
_SCAN_SECONDS = 120.0
_CLOSE_SECONDS = 30.0
_EXPIRY_CHECK_SECONDS = 5.0
_STATUS_POLL_SECONDS = 0.005
# How long a build waits for its leftover processes to be killed before it packs its output.
_PACK_WAIT_SECONDS = 5.0

# `survivors UID`: whether a process of user UID other than this shell is left (zombies too).
_SURVIVORS = r"""
survivors() {
  for proc in /proc/[0-9]*; do
    [ "${proc#/proc/}" != "$$" ] || continue
    while read -r key real rest; do
      if [ "$key" = "Uid:" ]; then [ "$real" != "$1" ] || return 0; break; fi
    done < "$proc/status" 2>/dev/null
  done
  return 1
}
"""
# A warm container's own process, as root with KEEPER_CAPABILITIES; its arguments: the build
# user's uid and the status file. On SIGUSR1 it kills every process but itself and init (its
# `kill -9 -1`) until none of the build user's is left, reaped too (bounded: processes that
# outlast it make the container unusable), then writes `clean N` (or `dirty N`) for its Nth
# round.
KEEPER = (
    _SURVIVORS
    + r"""
me=$1; status=$2; round=0
report() { printf '%s %d\n' "$1" "$round" > "$status.new" && mv -f "$status.new" "$status"; }
clean() {
  round=$((round + 1)); tries=0
  while survivors "$me"; do
    kill -9 -1 2>/dev/null
    tries=$((tries + 1))
    if [ "$tries" -ge 300 ]; then report dirty; return; fi
    sleep 0.01
  done
  report clean
}
trap clean USR1
report ready
while :; do sleep 86400 & wait $!; done
"""
)
# Exit code of a checkout that began with CLEAN_FIRST when the container was not clean.
NOT_CLEAN_EXIT = 4
# The first lines of a build's checkout in a warm container, as the build user: a no-op
# unless GOBUILD_CLEAN_UID is set; then, with the folders to empty (GOBUILD_CLEAN_ROOTS, one a
# line), no process of that user but this shell may be left (the keeper killed them), the
# folders are emptied, the System V IPC tables checked empty and the memory-kill counters
# printed; exit NOT_CLEAN_EXIT with the reason on stderr if any of it fails. In a function, so
# the caller's positional parameters stay.
CLEAN_FIRST = (
    (
        _SURVIVORS
        + r"""
gobuild_clean() {
  me=$1; shift
  IFS=$gobuild_ifs  # the folders are split: back to the shell's own splitting and globbing
  set +f
  ! survivors "$me" || { echo "processes of an earlier build survive" >&2; exit {not_clean}; }
  find "$@" -mindepth 1 -maxdepth 1 -user "$me" -exec chmod -R u+rwx -- {} + 2>/dev/null
  find "$@" -mindepth 1 -maxdepth 1 -exec rm -rf -- {} + 2>/dev/null
  left=$(find "$@" -mindepth 1 -user "$me" -print -quit 2>/dev/null)
  [ -z "$left" ] || { echo "could not remove $left" >&2; exit {not_clean}; }
  command -v ipcrm >/dev/null 2>&1 && ipcrm --all 2>/dev/null
  for kind in shm sem msg; do
    [ -r "/proc/sysvipc/$kind" ] || continue
    { read -r header; ! read -r object; } < "/proc/sysvipc/$kind" ||
      { echo "IPC objects survive" >&2; exit {not_clean}; }
  done
  cat {counters} 2>/dev/null
  return 0
}
if [ -n "$GOBUILD_CLEAN_UID" ]; then
  gobuild_ifs=$IFS
  IFS='
'
  set -f
  gobuild_clean "$GOBUILD_CLEAN_UID" $GOBUILD_CLEAN_ROOTS
fi
"""
    )
    .replace("{counters}", " ".join(OOM_COUNTER_FILES))
    .replace("{not_clean}", str(NOT_CLEAN_EXIT))
)
# What the build user may write to on the image's own file system (not mounts: -xdev).
_SCAN = r"""find / -xdev \( -path /proc -o -path /sys -o -path /dev \) -prune \
  -o -writable -printf '%y %p\n' 2>/dev/null; exit 0"""


@dataclass(frozen=True)
class WarmKey:
    """What a build needs its container to be: project, image, users, network, limits and
    mounts. A warm container goes only to a build with the same key."""

    project_id: str
    image: str
    user: str
    network: str
    memory_mb: int
    cpus: float
    pids_limit: int
    mounts: tuple[tuple[str, str], ...]

    @classmethod
    def of(cls, project_id: str, spec: StepSpec) -> WarmKey:
        return cls(
            project_id=project_id,
            image=spec.image,
            user=spec.user,
            network=spec.network,
            memory_mb=spec.memory_mb,
            cpus=spec.cpus,
            pids_limit=spec.pids_limit,
            mounts=tuple(sorted(spec.read_only_mounts.items())),
        )


@dataclass
class WarmContainer:
    """A container kept for builds of one project, and the host folder that is its
    workspace."""

    key: WarmKey
    session: ExecSession
    folder: Path
    # Builds that used it, the current one included.
    uses: int = 1
    idle_since: float = field(default_factory=time.monotonic)
    # What its next build runs first (None: nothing, it is new).
    cleaning: Cleaning | None = None
    # The keeper's rounds so far.
    rounds: int = 0
    # The keeper's round started when the build's steps ended (`stop_processes`): whether it
    # reports the build user's processes gone.
    stopping: asyncio.Future[bool] | None = None

    @property
    def keeper_folder(self) -> Path:
        return keeper_folder(self.folder)


@dataclass(frozen=True)
class Cleaning:
    """The second half of making a warm container as good as new: what its next build's
    checkout empties first, as the build user (`CLEAN_FIRST`)."""

    uid: int
    roots: tuple[str, ...]

    def values(self) -> dict[str, str]:
        """CLEAN_FIRST's environment."""
        return {"GOBUILD_CLEAN_UID": str(self.uid), "GOBUILD_CLEAN_ROOTS": "\n".join(self.roots)}


# CLEAN_FIRST's environment when there is nothing to clean.
NO_CLEANING = {"GOBUILD_CLEAN_UID": "", "GOBUILD_CLEAN_ROOTS": ""}


class ContainerNotClean(RuntimeError):
    """A warm container's checkout found what an earlier build left (its message says what)."""


def keeper_folder(folder: Path) -> Path:
    """The host folder where the keeper of the warm container with workspace `folder` reports."""
    return folder.with_name(folder.name + KEEPER_SUFFIX)


def keeper_status(folder: Path) -> str:
    """The keeper's last report (`ready 0`, `clean N`, `dirty N`); empty if none."""
    try:
        return (keeper_folder(folder) / "status").read_text().strip()
    except FileNotFoundError:
        return ""


def writable_roots(scan: str) -> tuple[str, ...] | None:
    """The topmost paths of `find -writable` output (`<type> <path>` lines; links left out),
    with Docker's shared-memory mounts; None if one is not a folder (a file could not be
    emptied)."""
    entries = sorted(
        (path, kind)
        for kind, _, path in (line.partition(" ") for line in scan.splitlines())
        if path
    )
    roots: list[str] = []
    for path, kind in entries:
        if kind == "l":  # a link is changed through its target, listed on its own if writable
            continue
        if any(path == root or path.startswith(root.rstrip("/") + "/") for root in roots):
            continue
        if kind != "d":
            return None
        roots.append(path)
    return (*roots, *_SHARED_MEMORY)


def _empty_folder(folder: Path) -> None:
    """Remove what is in `folder` (kept: a container has it mounted)."""
    for entry in folder.iterdir():
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


class WarmContainers:
    """This builder's warm containers: `take` one for a build, `adopt` a build's new one,
    `give_back` at the build's end."""

    def __init__(
        self,
        client: docker.DockerClient,
        builder_id: str,
        root: Path,
        *,
        keep_seconds: float,
        max_idle: int,
        max_uses: int,
        on_kept: Callable[[], None] | None = None,
    ) -> None:
        self.client = client
        self.on_kept = on_kept
        self.builder_id = builder_id
        self.root = root
        self.keep_seconds = keep_seconds
        self.max_idle = max_idle
        self.max_uses = max_uses
        self._idle: list[WarmContainer] = []
        # Containers being made as good as new, by the task doing it.
        self._returning: dict[asyncio.Task[None], WarmContainer] = {}
        # Per image: the folders the build user may write to (None: the image is not reusable).
        self._writable: dict[str, tuple[str, ...] | None] = {}
        self._closed = False

    def labels(self, project_id: str) -> dict[str, str]:
        """A warm container's labels: its builder and project, no build."""
        return {LABEL_BUILDER_ID: self.builder_id, LABEL_WARM: project_id}

    @property
    def _folder_prefix(self) -> str:
        return f"{FOLDER_PREFIX}{_NAME_UNSAFE.sub('-', self.builder_id)}-"

    def new_folder(self) -> Path:
        """A fresh host folder for a new warm container's workspace."""
        return self.root / f"{self._folder_prefix}{secrets.token_hex(8)}"

    @staticmethod
    def keeper(uid: int, folder: Path) -> tuple[tuple[str, ...], dict[str, str]]:
        """The main command of the warm container with workspace `folder` for build user
        `uid`, and its keeper's folder mounted (created now: only root may enter it)."""
        keeper = keeper_folder(folder)
        keeper.mkdir(mode=0o700, parents=True)
        os.chown(keeper, 0, 0)
        argv = ("sh", "-c", KEEPER, "keeper", str(uid), f"{KEEPER_MOUNT}/status")
        return argv, {str(keeper): KEEPER_MOUNT}

    def idle(self) -> list[WarmContainer]:
        return list(self._idle)

    def take(self, key: WarmKey) -> WarmContainer | None:
        """The warm container with `key` idle for the shortest time (its file caches are the
        warmest), now the caller's; None if there is none."""
        for warm in reversed(self._idle):
            if warm.key == key:
                self._idle.remove(warm)
                warm.uses += 1
                return warm
        return None

    async def take_soon(
        self, key: WarmKey, within: float = _RETURN_WAIT_SECONDS
    ) -> WarmContainer | None:
        """`take`, waiting up to `within` seconds for one with `key` that is being given back
        (a build that just ended frees its slot before its container is cleaned, and waiting
        for that costs far less than starting a new one)."""
        warm = self.take(key)
        returning = [task for task, given in self._returning.items() if given.key == key]
        if warm is not None or not returning:
            return warm
        await asyncio.wait(returning, timeout=within)
        return self.take(key)

    def adopt(self, key: WarmKey, session: ExecSession, folder: Path) -> WarmContainer:
        """A build's new container, to be given back at its end."""
        return WarmContainer(key=key, session=session, folder=folder)

    async def stop_processes(
        self, warm: WarmContainer, timeout: float = _PACK_WAIT_SECONDS
    ) -> bool:
        """The build's steps are over: have the keeper kill what they left, so that nothing
        changes the output while the build packs it (a process left in the background may
        still be writing to it), and giving the container back later takes little longer than
        emptying its folder. Waits at most `timeout` seconds (the round goes on, and giving
        back waits for its end); whether the keeper reported the processes gone."""
        if warm.stopping is None:
            warm.stopping = asyncio.ensure_future(self._kill_leftovers(warm))
        try:
            return await wait_within(asyncio.shield(warm.stopping), timeout)
        except TimeoutError:
            return False

    def give_back(self, warm: WarmContainer) -> None:
        """Make the container as good as new and keep it, or remove it (in the background)."""
        task = asyncio.ensure_future(self._give_back(warm))
        self._returning[task] = warm
        task.add_done_callback(lambda done: self._returning.pop(done, None))

    async def settled(self) -> None:
        """Until every container given back so far is kept or removed."""
        while self._returning:
            await asyncio.wait(set(self._returning))

    async def _give_back(self, warm: WarmContainer) -> None:
        reusable = False
        stopping, warm.stopping = warm.stopping, None
        try:
            keep = warm.uses < self.max_uses and not self._closed
            if stopping is not None:
                stopped = await stopping
            else:
                stopped = keep and await self._kill_leftovers(warm)
            if keep and stopped:
                roots = await self._writable_roots(warm.session)
                if roots is not None:
                    await asyncio.to_thread(_empty_folder, warm.folder)
                    uid, _ = parse_user(warm.session.spec.user)
                    warm.cleaning = Cleaning(uid, roots)
                    reusable = True
        except Exception as exc:
            log.warning("warm container %s not kept: %r", warm.session.container.name, exc)
        if not reusable or self._closed:
            await self._discard(warm)
            return
        warm.idle_since = time.monotonic()
        self._idle.append(warm)
        log.info(
            "warm container %s kept for project %s (%d builds so far)",
            warm.session.container.name,
            warm.key.project_id,
            warm.uses,
        )
        if self.on_kept is not None:
            self.on_kept()
        while len(self._idle) > self.max_idle:
            await self._discard(self._idle.pop(0))

    async def _kill_leftovers(self, warm: WarmContainer) -> bool:
        """Have the keeper kill the build user's processes; whether it reports them gone."""
        container = warm.session.container
        loop = asyncio.get_running_loop()
        deadline = loop.time() + _KILL_SECONDS
        warm.rounds += 1
        signalled = False
        while True:
            status = keeper_status(warm.folder)
            if not signalled and status:  # its trap is set: the signal cannot stop it
                await asyncio.to_thread(container.kill, signal="SIGUSR1")
                signalled = True
            if status == f"clean {warm.rounds}":
                return True
            if status == f"dirty {warm.rounds}" or loop.time() >= deadline:
                log.warning(
                    "warm container %s not kept: %s",
                    container.name,
                    "processes survive" if status.startswith("dirty") else "its keeper is silent",
                )
                return False
            await asyncio.sleep(_STATUS_POLL_SECONDS)

    async def _writable_roots(self, session: ExecSession) -> tuple[str, ...] | None:
        """The places the build user may write to in the session's image (None: the image is
        not reusable), found once per image, with the build user's processes gone (they
        cannot add a place: anything they made is inside one already)."""
        image = session.container.attrs.get("Image") or session.spec.image
        if image not in self._writable:
            scan = await session.run(["sh", "-c", _SCAN], env={}, timeout=_SCAN_SECONDS)
            roots = writable_roots(scan.stdout.decode("utf-8", "replace"))
            if roots is None:
                log.warning(
                    "image %s has files the build user may write to: its containers are not reused",
                    session.spec.image,
                )
            self._writable[image] = roots
        return self._writable[image]

    def discard_later(self, warm: WarmContainer) -> None:
        """Remove a container a build found not clean (in the background)."""
        task = asyncio.ensure_future(self._discard(warm))
        self._returning[task] = warm
        task.add_done_callback(lambda done: self._returning.pop(done, None))

    async def _discard(self, warm: WarmContainer) -> None:
        container = warm.session.container
        await asyncio.to_thread(remove_container, self.client, container, container.name)
        await asyncio.to_thread(shutil.rmtree, warm.folder, ignore_errors=True)
        await asyncio.to_thread(shutil.rmtree, warm.keeper_folder, ignore_errors=True)

    async def expire_forever(self) -> None:
        """Remove containers idle longer than `keep_seconds`, until cancelled."""
        while True:
            await asyncio.sleep(min(_EXPIRY_CHECK_SECONDS, self.keep_seconds))
            await self.expire()

    async def expire(self) -> None:
        now = time.monotonic()
        expired = [warm for warm in self._idle if now - warm.idle_since >= self.keep_seconds]
        for warm in expired:
            self._idle.remove(warm)
            await self._discard(warm)

    async def close(self) -> None:
        """Remove every warm container (the ones being given back once that ends)."""
        self._closed = True
        with contextlib.suppress(TimeoutError):
            await wait_within(self.settled(), _CLOSE_SECONDS)
        stuck = dict(self._returning)
        await cancel_and_wait(stuck)
        idle, self._idle = [*stuck.values(), *self._idle], []
        for warm in idle:
            await self._discard(warm)

    async def remove_leftovers(self) -> int:
        """Remove warm containers and folders a previous run of this builder left (it
        crashed); the count of containers."""

        labels = [LABEL_WARM, f"{LABEL_BUILDER_ID}={self.builder_id}"]
        removed = await remove_labelled_containers(self.client, labels)
        pattern = f"{self._folder_prefix}*"
        for folder in await asyncio.to_thread(lambda: list(self.root.glob(pattern))):
            await asyncio.to_thread(shutil.rmtree, folder, ignore_errors=True)
        return removed
