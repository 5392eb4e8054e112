"""Property-based run of schemathesis against `/openapi.json` of a real gateway.

The gateway runs under hypercorn on a free port (with its real Redis, broker and the storage
service that serves logs); schemathesis
generates requests for every operation from the description (a bounded, derandomized number
per operation) and checks that no answer is a 5xx and every answer matches the description:
documented status, content type, headers and body schema.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import httpx
import hypothesis
import pytest
import schemathesis
from hypercorn.asyncio import serve
from hypercorn.config import Config
from hypothesis import HealthCheck, Phase
from quart import Quart
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from gobuild.platform.bus import wait_for_topics
from gobuild.platform.config import Settings
from gobuild.platform.gateway.app import create_app
from gobuild.platform.storage.app import create_app as create_storage_app
from tests.gateway.conftest import auth_settings, gateway_settings
from tests.gateway.support import AUTH

MAX_EXAMPLES = 25
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
# Readiness is 503 by design here: no orchestrator runs in this test.
EXCLUDED = {("GET", "/readyz")}


class ServerThread:
    """The gateway and the storage service (logs) served by hypercorn in a thread with its own
    event loop."""

    def __init__(self, app: Quart, settings: Settings) -> None:
        self.app = app
        self.storage = create_storage_app(settings, consume_logs=False)
        self.settings = settings
        self.loop: asyncio.AbstractEventLoop | None = None
        self.stop: asyncio.Event | None = None
        self.thread = threading.Thread(target=self._run, name="gateway-under-test", daemon=True)

    def _run(self) -> None:
        asyncio.run(self._serve())

    async def _serve(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.stop = asyncio.Event()
        await wait_for_topics(self.settings)
        await asyncio.gather(
            self._serve_one(self.storage, self.settings.storage_port),
            self._serve_one(self.app, self.settings.gateway_port),
        )

    async def _serve_one(self, app: Quart, port: int) -> None:
        assert self.stop is not None
        config = Config()
        config.bind = [f"127.0.0.1:{port}"]
        config.accesslog = None
        config.graceful_timeout = 2
        await serve(app, config, shutdown_trigger=self.stop.wait)  # type: ignore[arg-type]

    def __enter__(self) -> str:
        self.thread.start()
        base = f"http://127.0.0.1:{self.settings.gateway_port}"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    return base
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError("the gateway did not start")

    def __exit__(self, *_: object) -> None:
        if self.loop is not None and self.stop is not None:
            self.loop.call_soon_threadsafe(self.stop.set)
        self.thread.join(timeout=15)


@dataclass
class ServedGateway:
    base_url: str
    # Path parameters naming things that exist, so generated requests also reach them.
    existing: dict[str, str]


def seed(base_url: str) -> dict[str, str]:
    """A user with a project, a build, a share link of it, an API key and an outgoing hook,
    made through the API."""
    with httpx.Client(base_url=base_url, headers=AUTH, timeout=10) as client:
        user = {"username": "jane", "password": "password-of-jane"}
        client.post("/api/users", json=user).raise_for_status()
        token = client.post("/api/auth/login", json=user).raise_for_status().json()
        jane = {"Authorization": f"Bearer {token['access_token']}"}
        project = client.post(
            "/api/projects",
            json={"name": "site", "repo_url": "https://github.com/jane/site.git"},
            headers=jane,
        ).raise_for_status()
        project_id = project.json()["id"]
        build = client.post(f"/api/projects/{project_id}/builds", json={}, headers=jane)
        build_id = build.raise_for_status().json()["build_id"]
        link = client.post(f"/api/builds/{build_id}/share", json={}, headers=jane)
        key = client.post(
            "/api/keys", json={"name": "ci", "scopes": ["builds:read"]}, headers=jane
        ).raise_for_status()
        hook = client.post(
            f"/api/projects/{project_id}/hooks",
            json={"url": "https://93.184.215.14/hook", "events": ["failed"]},
            headers=jane,
        ).raise_for_status()
    return {
        "project_ref": project_id,
        "build_id": build_id,
        "username": "jane",
        "key_id": key.json()["id"],
        "hook_id": hook.json()["id"],
        "link_id": link.raise_for_status().json()["id"],
        "token": link.json()["token"],
    }


@pytest.fixture
def served_gateway(
    make_settings: Callable[..., Settings], redis_url: str, kafka_bootstrap: str
) -> Iterator[ServedGateway]:
    settings = make_settings(redis_url=redis_url, kafka_bootstrap=kafka_bootstrap)
    settings.public_url = f"http://127.0.0.1:{settings.gateway_port}"
    app = create_app(
        settings,
        # Budgets large enough that the run tests the routes, not only the limiter.
        auth_settings=auth_settings(
            rate_limit_api_requests=100_000,
            rate_limit_login_requests=100_000,
            rate_limit_webhook_requests=100_000,
        ),
        gateway_settings=gateway_settings(),
    )
    with ServerThread(app, settings) as base_url:
        yield ServedGateway(base_url, seed(base_url))


def check_operation(operation: schemathesis.APIOperation, served: ServedGateway) -> None:
    """Generated requests for one operation; every other one names things that exist."""
    examples = 0

    @hypothesis.given(case=operation.as_strategy())
    @hypothesis.settings(
        max_examples=MAX_EXAMPLES,
        derandomize=True,
        database=None,
        deadline=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    def check(case: schemathesis.Case) -> None:
        nonlocal examples
        examples += 1
        if case.path_parameters and examples % 2:
            case.path_parameters = {
                name: served.existing.get(name, value)
                for name, value in case.path_parameters.items()
            }
        case.call_and_validate(base_url=served.base_url, headers=AUTH, checks=CHECKS)

    check()


@pytest.mark.timeout(600)
def test_generated_requests_get_no_5xx_and_only_documented_answers(
    served_gateway: ServedGateway,
) -> None:
    schema = schemathesis.openapi.from_url(f"{served_gateway.base_url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 25
    failures: list[str] = []
    for operation in operations:
        if (operation.method.upper(), operation.path) in EXCLUDED:
            continue
        try:
            check_operation(operation, served_gateway)
        except Exception as error:  # collect every operation's failure, then report them all
            failures.append(f"{operation.method.upper()} {operation.path}: {error}")
    assert not failures, "\n\n".join(failures)
