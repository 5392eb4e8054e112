"""Running a service process: structured one-line logging and serving a Quart app with
hypercorn until SIGINT/SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from collections.abc import Coroutine
from typing import Any

from hypercorn.asyncio import serve
from hypercorn.config import Config
from quart import Quart

from gobuild.platform.waiting import cancel_and_wait


def add_task_health(app: Quart, tasks: set[asyncio.Task[None]]) -> None:
    """`GET /healthz`: 200 while every background task of the service runs, else 503."""

    @app.get("/healthz")
    async def healthz() -> tuple[dict[str, object], int]:
        alive = bool(tasks) and all(not t.done() for t in tasks)
        consumers = sum(1 for t in tasks if t.get_name().endswith("-consumer"))
        body = {"status": "ok" if alive else "degraded", "consumers": consumers}
        return body, 200 if alive else 503


def start_task(tasks: set[asyncio.Task[None]], name: str, work: Coroutine[Any, Any, None]) -> None:
    """Run `work` as one of the service's background tasks; its death is logged (and shows
    in `/healthz`)."""
    task = asyncio.create_task(work, name=name)
    task.add_done_callback(_log_task_end)
    tasks.add(task)


async def stop_tasks(tasks: set[asyncio.Task[None]]) -> None:
    """Cancel the service's background tasks and wait until they ended."""
    await cancel_and_wait(tasks)
    tasks.clear()


def _log_task_end(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        logging.getLogger(__name__).error(
            "background task %s died", task.get_name(), exc_info=task.exception()
        )


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
