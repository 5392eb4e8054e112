"""A checkout that waits for the build's first step, in the same `docker exec`.

Each `docker exec` costs the engine and runc about 60 ms of CPU, as much as a small build's
step itself. A build in its kept clone container (or a warm one) made two: the checkout, then
its first step. So the checkout script may end by holding on (`HOLD_SCRIPT`): it prints a line
with the exec's nonce and waits on its standard input, which only this builder can write to.
The builder reads the checkout's facts, decides the plan and hands the held exec its first
step (`HeldExec.start_step`): the step's environment, folder and command go in as
length-prefixed records, never as shell text, and the script replaces itself with the step
(`exec sh -c`). Whatever the checkout had in its environment (the repository's credentials
among it) is gone from the step's process: the shell unsets every checkout variable before it
`exec`s, so the new process starts with exactly the environment a fresh exec of the step would
have (the container's, then the step's). Until it gets its step, the held checkout runs nothing
of the repository.

A held exec that gets no step (the build stops, the steps need another container) is let go
(`close`): its standard input closes and the script exits without running anything.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import secrets
import socket
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import docker
import docker.errors
from docker.models.containers import Container
from docker.utils.socket import frames_iter

from gobuild.builder_agent.container import (
    WORKDIR,
    ContainerError,
    ExecResult,
    ExecSession,
    StepSpec,
    create_exec,
    exec_exit,
    start_pump,
)
from gobuild.platform.waiting import wait_within

# The environment variable that asks the checkout script to hold on, with the nonce it prints
# (`held <nonce>`) when it waits for the step.
HOLD_VARIABLE = "GOBUILD_HOLD"
# The script's first lines when asked to hold: the exec's standard input moves to fd 3 (git
# and everything else the checkout runs read /dev/null), and nothing is done before the builder
# says `go` (it is reading the exec's output by then: not a byte is missed).
HOLD_START = """
if [ -n "${GOBUILD_HOLD:-}" ]; then
  exec 3<&0 </dev/null
  IFS= read -r gobuild_go <&3 || exit 0
fi
"""
# Its last lines, after a checkout that succeeded: wait for the step and become it. Records on
# fd 3: `line NAME -` then the value and a newline (a value without one: read by the shell
# itself), `set NAME LENGTH` then LENGTH bytes (read by `dd`), `unset NAME -`, `cd - LENGTH` then
# the folder, `run - LENGTH` then the command and `end`, which replaces the shell with the
# command. Anything else ends the script with HELD_NO_STEP without running anything (so does
# the end of the input: a held checkout let go), as does a cut record: the command runs only
# once every record was read whole.
HELD_NO_STEP = 120
HOLD_SCRIPT = """
[ -n "${GOBUILD_HOLD:-}" ] || exit 0
command -v dd >/dev/null 2>&1 || exit 0
printf 'held %s\\n' "$GOBUILD_HOLD"
gobuild_value() { dd bs=1 count="$1" 2>/dev/null <&3; printf x; }
while IFS=' ' read -r gobuild_op gobuild_name gobuild_length <&3; do
  case $gobuild_op in
    line) IFS= read -r gobuild_v <&3 || break; export "$gobuild_name=$gobuild_v" ;;
    set) gobuild_v=$(gobuild_value "$gobuild_length"); export "$gobuild_name=${gobuild_v%x}" ;;
    unset) unset "$gobuild_name" ;;
    cd) gobuild_v=$(gobuild_value "$gobuild_length"); cd "${gobuild_v%x}" || exit 126 ;;
    run)
      gobuild_v=$(gobuild_value "$gobuild_length")
      IFS= read -r gobuild_end <&3 && [ "$gobuild_end" = end ] || break
      exec 3<&-
      exec sh -c "${gobuild_v%x}"
      ;;
    *) break ;;
  esac
done
exit {no_step}
""".replace("{no_step}", str(HELD_NO_STEP))
# How long a held checkout let go may take to end.
_END_SECONDS = 10.0
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_STDOUT = 1


def _env_list(env: Sequence[str] | None) -> dict[str, str]:
    values: dict[str, str] = {}
    for item in env or ():
        name, _, value = item.partition("=")
        values[name] = value
    return values


@dataclass
class HeldExec:
    """A checkout exec holding on for its build's first step (see the module's text)."""

    session: ExecSession
    exec_id: str
    sock: Any
    queue: asyncio.Queue[Any]
    stop: threading.Event
    # The variables the checkout ran with: none of them may reach the step.
    checkout_names: frozenset[str]
    closed: bool = field(default=False)

    @property
    def container(self) -> Container:
        return self.session.container

    def can_run(self, spec: StepSpec) -> bool:
        """Whether `spec` can be handed over: the same user, and an environment that can be
        passed as records (names of variables, no NUL bytes)."""
        if self.closed or spec.user != self.session.spec.user:
            return False
        env = self._final_env(spec)
        texts = [spec.command, spec.workdir, *env.values()]
        # The script's own variables are `gobuild_*`: a variable of that name could change
        # under it.
        names_fit = all(_NAME.match(n) and not n.startswith("gobuild_") for n in env)
        return names_fit and not any("\0" in text for text in texts)

    def _final_env(self, spec: StepSpec) -> dict[str, str]:
        """What a fresh exec of `spec` would have: the container's environment, then its own."""
        return {**_env_list(self.container.attrs.get("Config", {}).get("Env")), **spec.env}

    async def start_step(self, spec: StepSpec) -> bool:
        """Hand over the step: the environment a fresh exec of it would get (the container's,
        then `spec.env`), its folder and its command. False (and the exec let go) if it cannot
        be handed over; the caller then execs it the usual way."""
        if not self.can_run(spec):
            await self.close()
            return False
        final = self._final_env(spec)
        records = bytearray()
        for name in sorted(self.checkout_names - final.keys()):
            records += f"unset {name} -\n".encode()
        for name, value in final.items():
            data = value.encode()
            if b"\n" in data:
                records += f"set {name} {len(data)}\n".encode() + data
            else:
                records += f"line {name} -\n".encode() + data + b"\n"
        if spec.workdir != WORKDIR:
            folder = spec.workdir.encode()
            records += f"cd - {len(folder)}\n".encode() + folder
        command = spec.command.encode()
        records += f"run - {len(command)}\n".encode() + command + b"end\n"
        try:
            await asyncio.to_thread(_send, self.sock, bytes(records))
        except OSError:
            await self.close()
            return False
        return True

    async def exit_code(self, *, started: bool = False) -> int | None:
        return await exec_exit(self.session.client, self.exec_id, started=started)

    async def close(self) -> None:
        """Let the exec go (its input ends and the script exits without running anything) and
        wait for its end: its environment holds the checkout's credentials, so no step may run
        beside it. ContainerError if it does not end."""
        if not self.closed:
            self.closed = True
            self.stop.set()
            await asyncio.to_thread(_shut, self.sock)
        try:
            await wait_within(self.exit_code(started=True), _END_SECONDS)
        except TimeoutError:
            raise ContainerError("the checkout did not end when told to") from None

    def forget(self) -> None:
        """Let the exec go without waiting for its end: nothing else of the build runs in its
        container any more (it is removed, or given back and cleaned first)."""
        if not self.closed:
            self.closed = True
            self.stop.set()
            _shut(self.sock)


def _raw(sock: Any) -> socket.socket:
    return getattr(sock, "_sock", sock)


def _send(sock: Any, data: bytes) -> None:
    _raw(sock).sendall(data)


def _shut(sock: Any) -> None:
    with contextlib.suppress(OSError):
        _raw(sock).shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()


def _demuxed(sock: Any) -> Any:
    for stream, data in frames_iter(sock, tty=False):
        yield (data, None) if stream == _STDOUT else (None, data)


def _start(session: ExecSession, argv: Sequence[str], env: Mapping[str, str]) -> tuple[str, Any]:
    client = session.client
    exec_id = create_exec(
        client, session.container.id, argv, session.spec.user, env, WORKDIR, stdin=True
    )
    return exec_id, client.api.exec_start(exec_id, socket=True)


async def run_holding(
    session: ExecSession, argv: Sequence[str], env: Mapping[str, str], timeout: float
) -> tuple[ExecResult, HeldExec | None]:
    """Run the checkout script `argv` asked to hold (`HOLD_VARIABLE` is set here): its result
    once it ended, or, once it holds on, its output so far (exit code 0) and the held exec.
    TimeoutError after `timeout` seconds (the exec let go)."""
    nonce = secrets.token_hex(8)
    try:
        exec_id, sock = await asyncio.to_thread(
            _start, session, argv, {**env, HOLD_VARIABLE: nonce}
        )
    except docker.errors.APIError as exc:
        raise ContainerError(f"could not run {argv[0]!r}: {exc.explanation or exc}") from None
    queue, stop = start_pump(_demuxed(sock), f"{session.container.name}-held")
    held = HeldExec(session, exec_id, sock, queue, stop, frozenset({*env, HOLD_VARIABLE}))
    marker = f"held {nonce}\n".encode()
    stdout, stderr = bytearray(), bytearray()
    try:
        try:
            await asyncio.to_thread(_send, sock, b"go\n")
        except OSError as exc:
            raise ContainerError(f"could not run {argv[0]!r}: {exc}") from None
        async with asyncio.timeout(timeout):
            while True:
                item = await queue.get()
                if item is None:
                    break
                stream, data = item
                if stream == "stderr":
                    stderr += data
                    continue
                stdout += data
                if stdout.endswith(marker):
                    del stdout[-len(marker) :]
                    return ExecResult(0, bytes(stdout), bytes(stderr)), held
            code = await held.exit_code(started=True)
    except BaseException:
        held.forget()
        raise
    held.forget()
    return ExecResult(-1 if code is None else code, bytes(stdout), bytes(stderr)), None
