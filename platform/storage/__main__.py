"""`python -m gobuild.platform.storage`: run the storage service with Hypercorn."""

from __future__ import annotations

import asyncio
import logging
import sys

from hypercorn.asyncio import serve
from hypercorn.config import Config

from gobuild.platform.config import Settings
from gobuild.platform.storage.app import SERVICE_NAME, create_app

LOG_FORMAT = f"%(asctime)s {SERVICE_NAME} %(levelname)s %(name)s: %(message)s"
GRACEFUL_TIMEOUT_SECONDS = 10.0


def bind_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def main() -> None:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format=LOG_FORMAT)
    settings = Settings()
    config = Config()
    config.bind = [bind_address(settings.bind_host, settings.storage_port)]
    config.accesslog = logging.getLogger("hypercorn.access")
    config.errorlog = logging.getLogger("hypercorn.error")
    config.graceful_timeout = GRACEFUL_TIMEOUT_SECONDS
    asyncio.run(serve(create_app(settings), config))  # type: ignore[arg-type]


if __name__ == "__main__":
    main()
