"""The notification service in-process on the session's Redis and broker, a real HTTP receiver
for its webhooks and a real SMTP server for its e-mail.

Receivers listen on 127.0.0.1, so the tests that use them turn on
GOBUILD_HOOKS_ALLOW_PRIVATE_ADDRESSES (`allow_private_addresses=True`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any

import pytest
import redis.asyncio as aioredis
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session
from hypercorn.asyncio import serve
from hypercorn.config import Config
from quart import Quart, request
from quart.testing.app import TestApp as QuartTestApp

from gobuild.platform.auth.users import UserStore
from gobuild.platform.bus import EventProducer, wait_for_topics
from gobuild.platform.config import AuthSettings, GatewaySettings, NotificationSettings, Settings
from gobuild.platform.devstack import free_port
from gobuild.platform.events import (
    TOPIC_BUILD_COMPLETIONS,
    TOPIC_BUILD_LOGS,
    TOPIC_BUILD_STATUS,
    TOPIC_DEPLOYMENT_STATUS,
    Event,
)
from gobuild.platform.gateway.app import create_app as create_gateway
from gobuild.platform.notification_records import Hook, NotificationPreferences, NotificationStage
from gobuild.platform.notifications.app import create_app
from gobuild.platform.records import Project, Provider, new_id
from gobuild.platform.repo_credentials import NOTIFICATION_SECRETS_PURPOSE, SecretCipher
from gobuild.platform.stores.hooks import HookStore
from gobuild.platform.stores.notification_preferences import PreferenceStore
from gobuild.platform.stores.projects import ProjectStore
from tests.gateway.conftest import auth_settings, gateway_settings
from tests.gateway.support import Gateway

DASHBOARD_URL = "https://dash.example.com"
GITHUB_API_URL = "https://api.github.com"
GITLAB_URL = "https://gitlab.example.com"
HOOK_SECRET = "a-hook-secret-of-some-length"
SHA = "4f0c1a3e5b7d9f1a2c4e6a8b0d2f4a6c8e0a2b4d"
_TOPICS = {
    "build.log": TOPIC_BUILD_LOGS,
    "build.completed": TOPIC_BUILD_COMPLETIONS,
    "deployment.status": TOPIC_DEPLOYMENT_STATUS,
}


@dataclass
class NotificationStack:
    """A running notification service and what the test needs to feed it."""

    settings: Settings
    redis: aioredis.Redis
    producer: EventProducer

    async def project(
        self,
        *,
        provider: Provider = "github",
        repo_url: str = "https://github.com/octo/site.git",
        forge_token: str | None = None,
        forge_url: str | None = None,
    ) -> Project:
        cipher = await self.cipher()
        project = Project(
            id=new_id("p_"),
            name=new_id("site-", 8),
            repo_url=repo_url,
            provider=provider,
            webhook_secret="x" * 32,
            forge_token=cipher.encrypt(forge_token) if forge_token else None,
            forge_url=forge_url,
        )
        assert await ProjectStore(self.redis).create(project)
        return project

    async def cipher(self) -> SecretCipher:
        return await SecretCipher.load(self.redis, self.settings, NOTIFICATION_SECRETS_PURPOSE)

    async def hook(
        self, project: Project, url: str, events: list[NotificationStage], secret: str = HOOK_SECRET
    ) -> Hook:
        cipher = await self.cipher()
        hook = Hook(
            id=new_id("h_"),
            project_id=project.id,
            url=url,
            events=events,
            secret=cipher.encrypt(secret),
        )
        await HookStore(self.redis).add(hook)
        return hook

    async def subscriber(
        self, project: Project, username: str, email: str, events: list[NotificationStage]
    ) -> None:
        users = UserStore(self.redis)
        await users.create(username, password="a-password-1", email=email, email_verified=True)
        await users.set_member(project.id, username, "maintainer")
        await PreferenceStore(self.redis).set(username, NotificationPreferences(events=events))

    async def publish(self, *events: Event) -> None:
        """Publish in order, each on its topic."""
        for event in events:
            await self.producer.publish(_TOPICS.get(event.type, TOPIC_BUILD_STATUS), event)


StartNotifications = Callable[..., Awaitable[NotificationStack]]


def notification_settings(**overrides: Any) -> NotificationSettings:
    """Fast pacing for tests: short coalescing, backoff and timeout."""
    values: dict[str, Any] = {
        "notification_coalesce_seconds": 0.3,
        "notification_retry_base_seconds": 0.2,
        "notification_timeout_seconds": 3.0,
        "notification_max_attempts": 4,
    }
    values.update(overrides)
    return NotificationSettings(_env_file=None, **values)  # type: ignore[call-arg]


@pytest.fixture
async def start_notifications(
    make_settings: Callable[..., Settings],
    redis_url: str,
    kafka_bootstrap: str,
    redis: aioredis.Redis,
    producer: EventProducer,
) -> AsyncIterator[StartNotifications]:
    """Start the service with setting overrides: `allow_private_addresses=`, `**notification`."""
    async with AsyncExitStack() as stack:

        async def start(
            *, allow_private_addresses: bool = False, **notification: Any
        ) -> NotificationStack:
            settings = make_settings(
                redis_url=redis_url,
                kafka_bootstrap=kafka_bootstrap,
                hooks_allow_private_addresses=allow_private_addresses,
            )
            app = create_app(
                settings,
                notification_settings=notification_settings(**notification),
                auth_settings=AuthSettings(
                    _env_file=None,  # type: ignore[call-arg]
                    github_api_url=GITHUB_API_URL,
                    gitlab_url=GITLAB_URL,
                ),
                gateway_settings=GatewaySettings(
                    _env_file=None,  # type: ignore[call-arg]
                    dashboard_url=DASHBOARD_URL,
                ),
            )
            await stack.enter_async_context(
                QuartTestApp(app, startup_timeout=60, shutdown_timeout=60)
            )
            return NotificationStack(settings=settings, redis=redis, producer=producer)

        yield start


# --- A real HTTP receiver ---------------------------------------------------------------------


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    status: int

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Receiver:
    """An HTTP server on 127.0.0.1 recording each POST and answering with `statuses` in turn
    (the last one from then on); `hang` makes it never answer."""

    port: int
    statuses: list[int] = field(default_factory=lambda: [200])
    hang: bool = False
    received: list[Received] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def delivered(self) -> list[Received]:
        return [r for r in self.received if 200 <= r.status < 300]


StartReceiver = Callable[..., Awaitable[Receiver]]


@pytest.fixture
async def start_receiver() -> AsyncIterator[StartReceiver]:
    stop = asyncio.Event()
    servers: list[asyncio.Task[None]] = []

    async def start(statuses: list[int] | None = None, *, hang: bool = False) -> Receiver:
        receiver = Receiver(port=free_port(), statuses=list(statuses or [200]), hang=hang)
        app = Quart(f"receiver-{receiver.port}")

        @app.post("/hook")
        async def hook() -> tuple[str, int]:
            body = await request.get_data()
            if receiver.hang:
                await asyncio.sleep(3600)
            status = receiver.statuses[min(len(receiver.received), len(receiver.statuses) - 1)]
            receiver.received.append(Received(dict(request.headers), body, status))
            return "", status

        config = Config()
        config.bind = [f"127.0.0.1:{receiver.port}"]
        config.accesslog = None
        config.graceful_timeout = 0.1
        servers.append(
            asyncio.create_task(serve(app, config, shutdown_trigger=stop.wait))  # type: ignore[arg-type]
        )
        await _wait_for_port(receiver.port)
        return receiver

    yield start
    stop.set()
    for server in servers:
        server.cancel()
    await asyncio.gather(*servers, return_exceptions=True)


async def _wait_for_port(port: int) -> None:
    for _ in range(100):
        with contextlib.suppress(OSError):
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            await writer.wait_closed()
            return
        await asyncio.sleep(0.05)
    raise RuntimeError(f"the receiver on port {port} did not start")


# --- A real SMTP server -----------------------------------------------------------------------


class Mailbox:
    """Collects what the SMTP server accepts."""

    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []
        self.recipients: list[list[str]] = []

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        assert isinstance(envelope.content, bytes)
        message = message_from_bytes(envelope.content, policy=policy.default)
        assert isinstance(message, EmailMessage)
        self.messages.append(message)
        self.recipients.append(list(envelope.rcpt_tos))
        return "250 OK"


@dataclass
class SmtpServer:
    port: int
    mailbox: Mailbox


@pytest.fixture
def smtp_server() -> Iterator[SmtpServer]:
    mailbox = Mailbox()
    port = free_port()
    controller = Controller(mailbox, hostname="127.0.0.1", port=port)
    controller.start()
    yield SmtpServer(port, mailbox)
    controller.stop()


# --- The gateway's notification API -----------------------------------------------------------

StartGateway = Callable[..., Awaitable[Gateway]]


@pytest.fixture
async def start_gateway(
    make_settings: Callable[..., Settings], redis_url: str, kafka_bootstrap: str
) -> AsyncIterator[StartGateway]:
    """A gateway on the same Redis as the notification service would use."""
    async with AsyncExitStack() as stack:

        async def start(*, allow_private_addresses: bool = False) -> Gateway:
            settings = make_settings(
                redis_url=redis_url,
                kafka_bootstrap=kafka_bootstrap,
                hooks_allow_private_addresses=allow_private_addresses,
            )
            await wait_for_topics(settings)
            app = create_gateway(
                settings, auth_settings=auth_settings(), gateway_settings=gateway_settings()
            )
            test_app = await stack.enter_async_context(app.test_app())
            return Gateway(client=test_app.test_client(), settings=settings)

        yield start
