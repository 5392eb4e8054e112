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
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote, urlsplit

import httpx

from gobuild.platform.bus import wait_for_topics
from gobuild.platform.config import HOST_CA_BUNDLE, Settings
from gobuild.platform.devstack import (
    ChildProcess,
    InfrastructureError,
    start_broker,
    start_redis,
)
from gobuild.platform.waiting import cancel_and_wait, wait_event, wait_within

log = logging.getLogger("gobuild.dev")

# The services `gobuild dev` runs, in start order (storage first: builders upload to it).
SERVICES = (
    ("storage", "gobuild.platform.storage"),
    ("orchestrator", "gobuild.platform.orchestrator"),
    ("builder", "gobuild.builder_agent"),
    ("gateway", "gobuild.platform.gateway"),
    ("notifications", "gobuild.platform.notifications"),
    ("retention", "gobuild.retention"),
    ("dashboard", "gobuild.ui"),
)
COLORS = {
    "storage": 35,
    "orchestrator": 33,
    "builder": 36,
    "gateway": 32,
    "notifications": 34,
    "retention": 90,
    "dashboard": 95,
    "dev": 1,
}
RESTART_LIMIT = 5
# A child that ran this long before dying starts its restart count afresh.
STABLE_SECONDS = 60.0


def restart_delay(restarts: int) -> float:
    """Backoff before the n-th restart in a row: 0.5 s, 1 s, 2 s, 4 s, then 5 s."""
    return min(2**restarts * 0.25, 5)


def _prefix(name: str) -> bytes:
    label = f"{name:<12}|"
    if sys.stdout.isatty():
        label = f"\x1b[{COLORS.get(name, 0)}m{label}\x1b[0m"
    return (label + " ").encode()


def say(message: str) -> None:
    sys.stdout.buffer.write(_prefix("dev") + message.encode() + b"\n")
    sys.stdout.buffer.flush()


def _kept_secret(path: Path, make: Callable[[], str]) -> str:
    """The secret stored at `path`, else a new one written there readable by the owner only."""
    if path.exists():
        return path.read_text().strip()
    secret = make()
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as file:
        file.write(secret + "\n")
    return secret


def admin_key_for(settings: Settings) -> str:
    """The admin API key: from settings, else made once and kept in the data folder."""
    if settings.admin_api_key:
        return settings.admin_api_key
    return _kept_secret(
        settings.data_dir / "admin-api-key", lambda: "gba_" + secrets.token_urlsafe(32)
    )


def internal_token_for(settings: Settings) -> str:
    """The secret the services present to storage: from settings, else made once and kept in
    the data folder."""
    if settings.internal_token:
        return settings.internal_token
    return _kept_secret(settings.data_dir / "internal-token", lambda: secrets.token_urlsafe(32))


def redis_password_for(settings: Settings) -> str:
    """The password of the Redis that `gobuild dev` starts: the one in GOBUILD_REDIS_URL,
    else made once and kept in the data folder."""
    given = urlsplit(settings.redis_url).password
    if given:
        return given
    return _kept_secret(settings.data_dir / "redis-password", lambda: secrets.token_urlsafe(32))


def _local_redis_url(url: str, port: int, password: str) -> str:
    """How the services reach the Redis that `gobuild dev` started (same database number)."""
    database = urlsplit(url).path.strip("/") or "0"
    return f"redis://:{quote(password, safe='')}@127.0.0.1:{port}/{database}"


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
            await asyncio.sleep(restart_delay(self.restarts))
            await self.start()

    async def stop(self, timeout: float = 10.0) -> None:
        self.stopping = True
        if self.process is None or self.process.returncode is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            await wait_within(self.process.wait(), timeout)
        except TimeoutError:
            self.process.kill()
            await self.process.wait()


async def supervise_infrastructure(child: ChildProcess, stopping: asyncio.Event) -> None:
    """Restart the embedded Redis or broker on its port when it dies, as the services are:
    with backoff, a limit on restarts in a row, and a line on the console each time."""
    restarts = 0
    while True:
        started = time.monotonic()
        code = await asyncio.to_thread(child.wait)  # a thread, so the exit is noticed at once
        if stopping.is_set():
            return
        if time.monotonic() - started >= STABLE_SECONDS:
            restarts = 0
        restarts += 1
        if restarts > RESTART_LIMIT:
            say(f"{child.name} exited with code {code} too often; giving up on it")
            return
        say(f"{child.name} exited with code {code}; restarting ({restarts}/{RESTART_LIMIT})")
        await wait_event(stopping, restart_delay(restarts))
        if stopping.is_set():
            return
        try:
            await asyncio.to_thread(child.start)
        except InfrastructureError as exc:
            say(f"{exc}")
            continue
        if stopping.is_set():  # stopped while starting: do not leave it running
            await asyncio.to_thread(child.stop)
            return
        say(f"{child.name} is running again on 127.0.0.1:{child.port}")


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
    internal_token = internal_token_for(settings)
    infra: list[ChildProcess] = []
    infra_stopping = asyncio.Event()
    infra_supervisors: list[asyncio.Task[None]] = []
    redis_url = settings.redis_url
    log_dir = settings.data_dir / "dev-logs"
    log_dir.mkdir(exist_ok=True)
    try:
        port = _port_of(settings.redis_url, 6379)
        if not settings.dev_embedded_redis or _listening(port):
            say(f"using the Redis server at {urlsplit(settings.redis_url).hostname}:{port}")
        else:
            password = redis_password_for(settings)
            redis_url = _local_redis_url(settings.redis_url, port, password)
            redis_log = (log_dir / "redis.log").open("ab")
            infra.append(start_redis(port, settings.data_dir / "redis", redis_log, password))
            say(f"redis on 127.0.0.1:{port} (AOF in {settings.data_dir / 'redis'})")
        port = _port_of(settings.kafka_bootstrap, 9092)
        if not settings.dev_embedded_kafka or _listening(port):
            say(f"using the Kafka broker at {settings.kafka_bootstrap}")
        else:
            infra.append(start_broker(port, (log_dir / "kafka.log").open("ab")))
            say(f"embedded Kafka-protocol broker (Tansu) on 127.0.0.1:{port}")
        infra_supervisors = [
            asyncio.create_task(supervise_infrastructure(child, infra_stopping), name=child.name)
            for child in infra
        ]
        await wait_for_topics(settings)

        env = {
            **os.environ,
            "GOBUILD_ADMIN_API_KEY": admin_key,
            "GOBUILD_INTERNAL_TOKEN": internal_token,
            "GOBUILD_DATA_DIR": str(settings.data_dir),
            "GOBUILD_REDIS_URL": redis_url,
        }
        env.setdefault("PYTHONUNBUFFERED", "1")
        # Sign-in, share links and `GET /` of the gateway lead people to the dashboard.
        dashboard_url = env.setdefault(
            "GOBUILD_DASHBOARD_URL", f"http://localhost:{settings.dashboard_port}"
        )
        if "allow_local_repos" not in settings.model_fields_set:
            # On one's own machine, admins may build local repositories (unless told not to).
            env["GOBUILD_ALLOW_LOCAL_REPOS"] = "true"
        if "build_ca_bundle" not in settings.model_fields_set and HOST_CA_BUNDLE.is_file():
            # Builds trust what this machine trusts (a TLS-inspecting proxy's CA, say).
            env["GOBUILD_BUILD_CA_BUNDLE"] = str(HOST_CA_BUNDLE)
        services = [
            ServiceProcess(name, module, env)
            for name, module in SERVICES
            if name != "builder" or settings.dev_builder
        ]
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
            dashboard = f"http://127.0.0.1:{settings.dashboard_port}"
            if await _wait_ready(f"{gateway}/readyz", 60) and await _wait_ready(
                f"{dashboard}/healthz", 30
            ):
                say("")
                say(f"GoBuild is running: {dashboard_url}  (the dashboard; sign in as admin)")
                say(f"  API:            {settings.gateway_public_url}")
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
                say(
                    f"not ready after 60 s; see the output above, {gateway}/readyz "
                    f"and {dashboard}/healthz"
                )
            await stop.wait()
            say("stopping...")
        finally:
            await asyncio.gather(*(s.stop() for s in reversed(services)))
            await cancel_and_wait(supervisors)
    finally:
        infra_stopping.set()
        for child in reversed(infra):
            child.stop()
        await asyncio.gather(*infra_supervisors, return_exceptions=True)
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
