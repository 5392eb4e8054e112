"""Running a service process: structured one-line logging and serving a Quart app with
hypercorn until SIGINT/SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys

from hypercorn.asyncio import serve
from hypercorn.config import Config
from quart import Quart


def configure_logging(service: str) -> None:
    """One line per event: time, level, service, logger, message."""
    level = os.environ.get("GOBUILD_LOG_LEVEL", "INFO").upper()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        logging.Formatter(f"%(asctime)s %(levelname)s {service} %(name)s: %(message)s")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("aiokafka", "hypercorn.access", "httpx", "docker", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def install_stop_signals(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)


async def serve_app(app: Quart, host: str, port: int) -> None:
    config = Config()
    config.bind = [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"]
    config.accesslog = None
    config.errorlog = logging.getLogger("hypercorn.error")
    config.graceful_timeout = 10
    stop = asyncio.Event()
    install_stop_signals(stop)
    await serve(app, config, shutdown_trigger=stop.wait)  # type: ignore[arg-type]


def run_app(app: Quart, host: str, port: int) -> None:
    asyncio.run(serve_app(app, host, port))
