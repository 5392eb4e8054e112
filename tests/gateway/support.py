"""Helpers for gateway tests: signed webhook deliveries, credentials, published triggers."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from dataclasses import dataclass
from typing import Any

from quart.typing import TestClientProtocol

from gobuild.platform.config import Settings
from gobuild.platform.events import TOPIC_BUILD_TRIGGERS, BuildTriggered
from tests.conftest import WEBHOOK_FIXTURES
from tests.kafka_reading import read_events

ADMIN_KEY = "test-admin-key"
AUTH = {"Authorization": f"Bearer {ADMIN_KEY}"}
ADMIN_PASSWORD = "initial-admin-password"
JWT_SECRET = "gateway-test-secret-that-is-long-enough-0123456789"
GITLAB_URL = "https://gitlab.example.com"
PASSWORD = "a-good-password-1"


def fixture_body(name: str) -> dict[str, Any]:
    return json.loads((WEBHOOK_FIXTURES / name).read_text())


def github_signature(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@dataclass
class Gateway:
    client: TestClientProtocol
    settings: Settings

    async def create_project(
        self, headers: dict[str, str] | None = None, **fields: Any
    ) -> dict[str, Any]:
        body = {"name": "hello-world", "repo_url": "https://github.com/Codertocat/Hello-World.git"}
        body.update(fields)
        response = await self.client.post("/api/projects", json=body, headers=headers or AUTH)
        assert response.status_code == 201, await response.get_data(as_text=True)
        return await response.get_json()

    async def create_user(
        self, username: str, password: str = PASSWORD, **fields: Any
    ) -> dict[str, Any]:
        response = await self.client.post(
            "/api/users", json={"username": username, "password": password, **fields}, headers=AUTH
        )
        assert response.status_code == 201, await response.get_data(as_text=True)
        return await response.get_json()

    async def login(self, username: str, password: str = PASSWORD) -> dict[str, Any]:
        response = await self.client.post(
            "/api/auth/login", json={"username": username, "password": password}
        )
        assert response.status_code == 200, await response.get_data(as_text=True)
        return await response.get_json()

    async def user_headers(self, username: str) -> dict[str, str]:
        """Create a user and log them in: their `Authorization` header."""
        await self.create_user(username)
        return bearer((await self.login(username))["access_token"])

    async def create_key(self, headers: dict[str, str], *scopes: str) -> dict[str, Any]:
        response = await self.client.post(
            "/api/keys", json={"name": "ci", "scopes": list(scopes)}, headers=headers
        )
        assert response.status_code == 201, await response.get_data(as_text=True)
        return await response.get_json()

    async def start_build(self, project_id: str, headers: dict[str, str] | None = None) -> str:
        response = await self.client.post(
            f"/api/projects/{project_id}/builds", json={}, headers=headers or AUTH
        )
        assert response.status_code == 202, await response.get_data(as_text=True)
        return (await response.get_json())["build_id"]

    async def github_push(
        self, payload: dict[str, Any], secret: str, delivery: str | None, event: str = "push"
    ) -> Any:
        """A signed GitHub delivery; `delivery=None` sends no `X-GitHub-Delivery` header."""
        body = json.dumps(payload).encode()
        headers = {
            "Content-Type": "application/json",
            "X-GitHub-Event": event,
            "X-Hub-Signature-256": github_signature(secret, body),
        }
        if delivery is not None:
            headers["X-GitHub-Delivery"] = delivery
        return await self.client.post("/webhooks/github", data=body, headers=headers)


async def published_triggers(
    settings: Settings, expected: int, wait: float = 3.0
) -> list[BuildTriggered]:
    """The triggers on `build-triggers`, read from the start; waits for `expected` of them."""
    events = await read_events(settings, [TOPIC_BUILD_TRIGGERS], expected, wait)
    return [e for e in events if isinstance(e, BuildTriggered)]
