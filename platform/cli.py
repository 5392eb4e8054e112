"""The `gobuild` command. `gobuild dev` runs everything on this machine: the embedded
Kafka-protocol broker, a Redis server and every service as a child process, with one
combined, prefixed console output. Ctrl-C stops all of it."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import secrets
import signal
import socket
import sys
import time
from urllib.parse import urlsplit

import httpx

from gobuild.platform.bus import wait_for_topics
from gobuild.platform.config import Settings
from gobuild.platform.devstack import ChildProcess, start_broker, start_redis

log = logging.getLogger("gobuild.dev")

# The services `gobuild dev` runs, in start order (storage first: builders upload to it).
SERVICES = (
    ("storage", "gobuild.platform.storage"),
    ("orchestrator", "gobuild.platform.orchestrator"),
    ("builder", "gobuild.builder_agent"),
    ("gateway", "gobuild.platform.gateway"),
)
COLORS = {"storage": 35, "orchestrator": 33, "builder": 36, "gateway": 32, "dev": 1}
RESTART_LIMIT = 5


def _prefix(name: str) -> bytes:
    label = f"{name:<12}|"
    if sys.stdout.isatty():
        label = f"\x1b[{COLORS.get(name, 0)}m{label}\x1b[0m"
    return (label + " ").encode()


def say(message: str) -> None:
    sys.stdout.buffer.write(_prefix("dev") + message.encode() + b"\n")
    sys.stdout.buffer.flush()


def admin_key_for(settings: Settings) -> str:
    """The admin API key: from settings, else made once and kept in the data folder."""
    if settings.admin_api_key:
        return settings.admin_api_key
    path = settings.data_dir / "admin-api-key"
    if path.exists():
        return path.read_text().strip()
    key = "gba_" + secrets.token_urlsafe(32)
    path.write_text(key + "\n")
    path.chmod(0o600)
    return key


def _port_of(address: str, default: int) -> int:
    parsed = urlsplit(address if "://" in address else f"tcp://{address}")
    return parsed.port or default


def _listening(port: int) -> bool:
    """Something (a Redis or broker the user runs already) listens on this local port."""
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
        return True
    return False


class ServiceProcess:
    """One child service: started, its output prefixed, restarted if it dies, stopped on exit."""

    def __init__(self, name: str, module: str, env: dict[str, str]) -> None:
        self.name = name
        self.module = module
        self.env = env
        self.process: asyncio.subprocess.Process | None = None
        self.stopping = False
        self.restarts = 0

    async def start(self) -> None:
        self.process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            self.module,
            env=self.env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )

    async def supervise(self) -> None:
        prefix = _prefix(self.name)
        while True:
            assert self.process is not None and self.process.stdout is not None
            async for line in self.process.stdout:
                sys.stdout.buffer.write(prefix + line)
                sys.stdout.buffer.flush()
            code = await self.process.wait()
            if self.stopping:
                return
            self.restarts += 1
            if self.restarts > RESTART_LIMIT:
                say(f"{self.name} exited with code {code} too often; giving up on it")
                return
            say(
                f"{self.name} exited with code {code}; restarting ({self.restarts}/{RESTART_LIMIT})"
            )
            await asyncio.sleep(min(2**self.restarts * 0.25, 5))
            await self.start()

    async def stop(self, timeout: float = 10.0) -> None:
        self.stopping = True
        if self.process is None or self.process.returncode is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(self.process.wait(), timeout)
        except TimeoutError:
            self.process.kill()
            await self.process.wait()


async def _wait_ready(url: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(timeout=2.0) as client:
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                if (await client.get(url)).status_code == 200:
                    return True
            await asyncio.sleep(0.2)
    return False


async def run_dev(settings: Settings) -> int:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    admin_key = admin_key_for(settings)
    infra: list[ChildProcess] = []
    log_dir = settings.data_dir / "dev-logs"
    log_dir.mkdir(exist_ok=True)
    try:
        port = _port_of(settings.redis_url, 6379)
        if not settings.dev_embedded_redis or _listening(port):
            say(f"using the Redis server at {settings.redis_url}")
        else:
            redis_log = (log_dir / "redis.log").open("ab")
            infra.append(start_redis(port, settings.data_dir / "redis", redis_log))
            say(f"redis on 127.0.0.1:{port} (AOF in {settings.data_dir / 'redis'})")
        port = _port_of(settings.kafka_bootstrap, 9092)
        if not settings.dev_embedded_kafka or _listening(port):
            say(f"using the Kafka broker at {settings.kafka_bootstrap}")
        else:
            infra.append(start_broker(port, (log_dir / "kafka.log").open("ab")))
            say(f"embedded Kafka-protocol broker (Tansu) on 127.0.0.1:{port}")
        await wait_for_topics(settings)

        env = {
            **os.environ,
            "GOBUILD_ADMIN_API_KEY": admin_key,
            "GOBUILD_DATA_DIR": str(settings.data_dir),
        }
        env.setdefault("PYTHONUNBUFFERED", "1")
        services = [ServiceProcess(name, module, env) for name, module in SERVICES]
        supervisors: list[asyncio.Task[None]] = []
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        try:
            for service in services:
                await service.start()
                supervisors.append(asyncio.create_task(service.supervise(), name=service.name))
            gateway = f"http://127.0.0.1:{settings.gateway_port}"
            if await _wait_ready(f"{gateway}/readyz", 60):
                say("")
                say(f"GoBuild is running: {settings.gateway_public_url}")
                say(f"  admin API key:  {admin_key}")
                say(
                    f"  try:            curl -u admin:{admin_key} "
                    f"{settings.gateway_public_url}/api/projects"
                )
                say(
                    f"  deployments at: http://<deployment>.{settings.deploy_domain}:{settings.gateway_port}/"
                )
                say("Press Ctrl-C to stop.")
            else:
                say(f"not ready after 60 s; see the output above and {gateway}/readyz")
            await stop.wait()
            say("stopping...")
        finally:
            await asyncio.gather(*(s.stop() for s in reversed(services)))
            for task in supervisors:
                task.cancel()
            await asyncio.gather(*supervisors, return_exceptions=True)
    finally:
        for child in reversed(infra):
            child.stop()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gobuild", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("dev", help="run every service, a broker and Redis on this machine")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s dev %(name)s: %(message)s"
    )
    if args.command == "dev":
        return asyncio.run(run_dev(Settings()))
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
