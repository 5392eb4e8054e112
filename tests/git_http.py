"""A git server over HTTP for tests that need credentials to reach a repository: bare
repositories served with git's dumb HTTP protocol, only to one `user:password`."""

from __future__ import annotations

import base64
import ipaddress
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import docker

from gobuild.platform.devstack import free_port


class _BasicAuthFiles(SimpleHTTPRequestHandler):
    def __init__(self, *args: object, credentials: str, **kwargs: object) -> None:
        self.expected = "Basic " + base64.b64encode(credentials.encode()).decode()
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]

    def do_GET(self) -> None:
        if self.headers.get("Authorization") != self.expected:
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="git"')
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        super().do_GET()

    def log_message(self, format: str, *args: object) -> None:
        pass


@contextmanager
def repositories_over_http(folder: Path, credentials: str) -> Iterator[int]:
    """Serve the bare repositories in `folder` (run `git update-server-info` in each after
    every push) on every address of this machine; yields the port."""
    handler = partial(_BasicAuthFiles, directory=str(folder), credentials=credentials)
    server = ThreadingHTTPServer(("0.0.0.0", free_port()), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def docker_host_address(client: docker.DockerClient) -> str:
    """This machine's address as containers reach it (the gateway of Docker's `bridge`)."""
    config = client.networks.get("bridge").attrs["IPAM"]["Config"][0]
    return config.get("Gateway") or str(ipaddress.ip_network(config["Subnet"])[1])
