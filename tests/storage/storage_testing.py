"""Helpers for the storage tests: the app with a test client that presents the internal
token (as the gateway and builders do), tar.gz archives built in memory and a real Hypercorn
server running the app in the test's event loop."""

from __future__ import annotations

import asyncio
import io
import tarfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
from hypercorn.asyncio import serve
from hypercorn.config import Config
from quart import Quart
from quart.testing import QuartClient
from quart.typing import TestHTTPConnectionProtocol
from quart.wrappers import Response
from werkzeug.datastructures import Headers

from gobuild.platform.config import Settings
from gobuild.platform.devstack import free_port
from gobuild.platform.storage.app import create_app
from gobuild.platform.storage.services import EXTENSION_KEY, StorageServices
from gobuild.platform.storage_client import INTERNAL_TOKEN_HEADER


class InternalClient(QuartClient):
    """A test client that presents the app's internal token unless the test sets the header."""

    def _with_token(self, headers: dict[str, str] | Headers | None) -> Headers:
        services: StorageServices = self.app.extensions[EXTENSION_KEY]
        merged = Headers(headers)
        merged.setdefault(INTERNAL_TOKEN_HEADER, services.settings.internal_token)
        return merged

    async def open(  # type: ignore[override]
        self, path: str, *, headers: dict[str, str] | Headers | None = None, **kwargs: Any
    ) -> Response:
        return await super().open(path, headers=self._with_token(headers), **kwargs)

    def request(  # type: ignore[override]
        self, path: str, *, headers: dict[str, str] | Headers | None = None, **kwargs: Any
    ) -> TestHTTPConnectionProtocol:
        return super().request(path, headers=self._with_token(headers), **kwargs)


def create_storage_app(settings: Settings, **options: Any) -> Quart:
    """The storage app whose `test_client()` presents the internal token."""
    app = create_app(settings, **options)
    app.test_client_class = InternalClient
    return app


@dataclass(frozen=True)
class StorageUnderTest:
    """The started storage app, a test client for it, and its settings."""

    app: Quart
    client: QuartClient
    settings: Settings


@dataclass(frozen=True)
class Entry:
    """One archive member: kind is file, dir, symlink, hardlink, chr, blk or fifo."""

    kind: str
    name: str
    content: bytes = b""
    target: str = ""
    mode: int = 0o644


def file(name: str, content: bytes | str = b"", mode: int = 0o644) -> Entry:
    data = content.encode() if isinstance(content, str) else content
    return Entry("file", name, content=data, mode=mode)


def directory(name: str) -> Entry:
    return Entry("dir", name, mode=0o755)


def symlink(name: str, target: str) -> Entry:
    return Entry("symlink", name, target=target)


def hardlink(name: str, target: str) -> Entry:
    return Entry("hardlink", name, target=target)


def special(kind: str, name: str) -> Entry:
    return Entry(kind, name)


TAR_TYPES = {
    "dir": tarfile.DIRTYPE,
    "symlink": tarfile.SYMTYPE,
    "hardlink": tarfile.LNKTYPE,
    "chr": tarfile.CHRTYPE,
    "blk": tarfile.BLKTYPE,
    "fifo": tarfile.FIFOTYPE,
}


def build_tar_gz(entries: list[Entry]) -> bytes:
    """A tar.gz with exactly these members, in this order (no normalization of names)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz", format=tarfile.PAX_FORMAT) as tar:
        for entry in entries:
            info = tarfile.TarInfo(entry.name)
            info.mode = entry.mode
            info.mtime = 1_700_000_000
            if entry.kind == "file":
                info.size = len(entry.content)
                tar.addfile(info, io.BytesIO(entry.content))
                continue
            info.type = TAR_TYPES[entry.kind]
            info.linkname = entry.target
            if entry.kind in ("chr", "blk"):
                info.devmajor, info.devminor = 1, 3
            tar.addfile(info)
    return buffer.getvalue()


SITE_ENTRIES = [
    directory("./"),
    file("index.html", "<h1>home</h1>"),
    directory("about"),
    file("about/index.html", "<h1>about</h1>"),
    file("assets/app.js", "console.log('hi')"),
    file("assets/style.css", "body { color: red }"),
    file("logo.svg", "<svg xmlns='http://www.w3.org/2000/svg'/>"),
    file("data.json", '{"ok": true}'),
    file("module.wasm", b"\x00asm\x01\x00\x00\x00"),
    symlink("latest.js", "assets/app.js"),
]


@asynccontextmanager
async def running_server(app: Quart) -> AsyncIterator[str]:
    """Serve `app` with Hypercorn on a free port (lifespan included); yields the base URL."""
    port = free_port()
    config = Config()
    config.bind = [f"127.0.0.1:{port}"]
    config.graceful_timeout = 2.0
    shutdown = asyncio.Event()
    task = asyncio.create_task(serve(app, config, shutdown_trigger=shutdown.wait))  # type: ignore[arg-type]
    base_url = f"http://127.0.0.1:{port}"
    try:
        async with asyncio.timeout(20), httpx.AsyncClient(base_url=base_url) as client:
            while True:
                if task.done():
                    task.result()
                try:
                    await client.get("/healthz")
                    break
                except httpx.TransportError:
                    await asyncio.sleep(0.05)
        yield base_url
    finally:
        shutdown.set()
        await asyncio.wait_for(task, 20)
