"""Warm containers: a build's clone container, kept after the build for the next build of the
same project (GOBUILD_BUILD_CONTAINER_REUSE_SECONDS).

Starting a container on the build network is most of what a small build costs this builder
(its network, file system and cgroup are set up and torn down each time); a `docker exec` in a
running one costs a fraction of it. So once a build is over, its container is made as good as
new and kept, idle, for a while: the next build of the same project, with the same image,
limits, network and mounts, checks out and runs its steps in it.

Made as good as new means, before the container is taken again:
- every process of the build user is killed. The container's own process (an idle `sleep`)
  belongs to root, which the build user, without capabilities, can neither signal nor trace;
- every place the build user may write to is emptied: the workspace (on the host) and the
  folders of the image's file system it may write to (found once per image by `find -writable`
  as that user), /dev/shm and /dev/mqueue; its System V IPC objects are removed;
- the container's memory-kill count is read, so a later build's out-of-memory check counts
  only its own kills.
If any of this fails (the container was killed, a process survives, a file stays, the image
has a file the build user may write to) the container is removed instead.

A warm container never goes to another project: projects are the boundary between tenants,
and builds of one project already share its dependency caches. It is removed after
`keep_seconds` idle, after `max_uses` builds and when the builder stops; a builder that
crashed removes its leftovers when it starts again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
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
    count_oom_kills,
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
_SANITIZE_SECONDS = 30.0
_SCAN_SECONDS = 120.0
_CLOSE_SECONDS = 30.0
_EXPIRY_CHECK_SECONDS = 5.0

# Run as the build user, its uid first, then the folders to empty. `kill -9 -1` signals every
# process the caller may signal but itself: the build user's (and fails on no other). Until
# none is left, reaped too (bounded: processes that outlast it make the container unusable).
_SANITIZE = r"""
me=$1; shift
survivors() {
  for proc in /proc/[0-9]*; do
    [ "${proc#/proc/}" != "$$" ] || continue
    while read -r key real rest; do
      if [ "$key" = "Uid:" ]; then [ "$real" != "$me" ] || return 0; break; fi
    done < "$proc/status" 2>/dev/null
  done
  return 1
}
tries=0
while survivors; do
  kill -9 -1 2>/dev/null
  tries=$((tries + 1))
  [ "$tries" -lt 300 ] || { echo "processes survive" >&2; exit 90; }
  sleep 0.01
done
find "$@" -mindepth 1 -maxdepth 1 -user "$me" -exec chmod -R u+rwx -- {} + 2>/dev/null
find "$@" -mindepth 1 -maxdepth 1 -exec rm -rf -- {} + 2>/dev/null
left=$(find "$@" -mindepth 1 -user "$me" -print -quit 2>/dev/null)
[ -z "$left" ] || { echo "could not remove $left" >&2; exit 91; }
command -v ipcrm >/dev/null 2>&1 && ipcrm --all 2>/dev/null
for kind in shm sem msg; do
  [ -r "/proc/sysvipc/$kind" ] || continue
  { read -r header; ! read -r object; } < "/proc/sysvipc/$kind" ||
    { echo "IPC objects survive" >&2; exit 92; }
done
cat {counters} 2>/dev/null
exit 0
""".replace("{counters}", " ".join(OOM_COUNTER_FILES))
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

    def adopt(self, key: WarmKey, session: ExecSession, folder: Path) -> WarmContainer:
        """A build's new container, to be given back at its end."""
        return WarmContainer(key=key, session=session, folder=folder)

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
        try:
            if warm.uses < self.max_uses and not self._closed and await self._sanitize(warm):
                await asyncio.to_thread(_empty_folder, warm.folder)
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

    async def _sanitize(self, warm: WarmContainer) -> bool:
        """Kill the build user's processes, empty what it may write to; whether that worked."""
        session = warm.session
        uid, _ = parse_user(session.spec.user)
        roots = await self._writable_roots(session)
        if roots is None:
            return False
        result = await session.run(
            ["sh", "-c", _SANITIZE, "sanitize", str(uid), *roots],
            env={},
            timeout=_SANITIZE_SECONDS,
        )
        if result.exit_code != 0:
            log.warning(
                "warm container %s not kept: %s",
                session.container.name,
                result.stderr.decode("utf-8", "replace").strip() or f"exit {result.exit_code}",
            )
            return False
        session.oom_kills_before = count_oom_kills(result.stdout)
        return True

    async def _writable_roots(self, session: ExecSession) -> tuple[str, ...] | None:
        image = session.container.attrs.get("Image") or session.spec.image
        if image not in self._writable:
            # Found with the build user's processes gone (they cannot add a place: anything
            # they made is inside one already).
            await session.run(["sh", "-c", "kill -9 -1; exit 0"], env={}, timeout=10)
            scan = await session.run(["sh", "-c", _SCAN], env={}, timeout=_SCAN_SECONDS)
            roots = writable_roots(scan.stdout.decode("utf-8", "replace"))
            if roots is None:
                log.warning(
                    "image %s has files the build user may write to: its containers are not reused",
                    session.spec.image,
                )
            self._writable[image] = roots
        return self._writable[image]

    async def _discard(self, warm: WarmContainer) -> None:
        container = warm.session.container
        await asyncio.to_thread(remove_container, self.client, container, container.name)
        await asyncio.to_thread(shutil.rmtree, warm.folder, ignore_errors=True)

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
