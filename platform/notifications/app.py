"""The notification service as a small Quart app (`/healthz`); the work happens in tasks
started with the app and stopped with it: two consumers (stage events; build logs, read apart
so a flood of log lines never delays a status) and the delivery worker.

It keeps nothing but Redis, so several instances can run: each event reaches one of them (one
consumer group per stream), and any instance works any queued delivery.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

import httpx
from quart import Quart

from gobuild.platform.api_errors import register_error_handlers
from gobuild.platform.auth.users import UserStore
from gobuild.platform.bus import (
    RELAXED_FETCH_MAX_WAIT_MS,
    EventProducer,
    consume_forever,
    wait_for_topics,
)
from gobuild.platform.config import AuthSettings, GatewaySettings, NotificationSettings, Settings
from gobuild.platform.events import (
    TOPIC_BUILD_COMPLETIONS,
    TOPIC_BUILD_LOGS,
    TOPIC_BUILD_STATUS,
    TOPIC_DEPLOYMENT_STATUS,
)
from gobuild.platform.notifications.delivery_worker import DeliveryWorker
from gobuild.platform.notifications.error_lines import ErrorLineCollector
from gobuild.platform.notifications.fanout import Fanout
from gobuild.platform.notifications.mailer import SmtpMailer
from gobuild.platform.notifications.messages import BuildLinks
from gobuild.platform.notifications.outgoing import OutgoingHttp
from gobuild.platform.notifications.sending import DeliverySender, ForgeUrls
from gobuild.platform.repo_credentials import NOTIFICATION_SECRETS_PURPOSE, SecretCipher
from gobuild.platform.service import add_task_health, start_task, stop_tasks
from gobuild.platform.stores.build_notes import BuildNotes
from gobuild.platform.stores.builds import BuildStore
from gobuild.platform.stores.connection import connect_redis
from gobuild.platform.stores.deliveries import DeliveryQueue
from gobuild.platform.stores.hooks import HookStore
from gobuild.platform.stores.notification_preferences import PreferenceStore
from gobuild.platform.stores.projects import ProjectStore
from gobuild.platform.waiting import wait_within

log = logging.getLogger(__name__)

EXTENSION_KEY = "gobuild.notifications"
STAGES_GROUP = "notifications"
LOGS_GROUP = "notifications-logs"
# Both consumer groups must have been joined before the app serves.
JOIN_TIMEOUT_SECONDS = 120.0


def create_app(
    settings: Settings,
    *,
    notification_settings: NotificationSettings | None = None,
    auth_settings: AuthSettings | None = None,
    gateway_settings: GatewaySettings | None = None,
) -> Quart:
    """The service; the forge URLs come from `auth_settings`, the dashboard's from
    `gateway_settings` (both read from the environment when not given)."""
    notification_settings = notification_settings or NotificationSettings()
    auth_settings = auth_settings or AuthSettings()
    gateway_settings = gateway_settings or GatewaySettings()
    app = Quart("gobuild.notifications")
    register_error_handlers(app)
    tasks: set[asyncio.Task[None]] = set()

    add_task_health(app, tasks)

    @app.before_serving
    async def _start() -> None:
        await wait_for_topics(settings)
        redis = connect_redis(settings.redis_url)
        producer = EventProducer(settings, client_id="notifications")
        await producer.start()
        http = httpx.AsyncClient(
            timeout=httpx.Timeout(notification_settings.notification_timeout_seconds),
            follow_redirects=False,
        )
        app.extensions[EXTENSION_KEY] = (redis, producer, http)
        queue, notes = DeliveryQueue(redis), BuildNotes(redis)
        projects, users, hooks = ProjectStore(redis), UserStore(redis), HookStore(redis)
        sender = DeliverySender(
            projects=projects,
            hooks=hooks,
            users=users,
            notes=notes,
            cipher=await SecretCipher.load(redis, settings, NOTIFICATION_SECRETS_PURPOSE),
            http=OutgoingHttp(
                http,
                timeout=notification_settings.notification_timeout_seconds,
                allow_private_addresses=settings.hooks_allow_private_addresses,
            ),
            mailer=SmtpMailer(notification_settings) if notification_settings.smtp_host else None,
            links=BuildLinks.for_urls(gateway_settings.dashboard_url, settings.gateway_public_url),
            forge_urls=ForgeUrls(auth_settings.github_api_url, auth_settings.gitlab_url),
        )
        worker = DeliveryWorker(queue, sender, notification_settings)
        fanout = Fanout(
            redis,
            queue=queue,
            notes=notes,
            projects=projects,
            builds=BuildStore(redis),
            hooks=hooks,
            users=users,
            preferences=PreferenceStore(redis),
            email_enabled=bool(notification_settings.smtp_host),
            coalesce_seconds=notification_settings.notification_coalesce_seconds,
            queued=worker.wake,
        )
        collector = ErrorLineCollector(redis, notes, producer)

        def start(name: str, work: Coroutine[Any, Any, None]) -> None:
            start_task(tasks, f"notifications-{name}", work)

        joined = [asyncio.Event(), asyncio.Event()]
        start(
            "stages-consumer",
            consume_forever(
                settings,
                [TOPIC_BUILD_STATUS, TOPIC_BUILD_COMPLETIONS, TOPIC_DEPLOYMENT_STATUS],
                fanout.handle,
                group_id=STAGES_GROUP,
                client_id="notifications-stages",
                joined=joined[0],
                fetch_max_wait_ms=RELAXED_FETCH_MAX_WAIT_MS,
            ),
        )
        start(
            "logs-consumer",
            consume_forever(
                settings,
                [TOPIC_BUILD_LOGS],
                collector.handle,
                group_id=LOGS_GROUP,
                client_id="notifications-logs",
                joined=joined[1],
                fetch_max_wait_ms=RELAXED_FETCH_MAX_WAIT_MS,
            ),
        )
        start("deliveries", worker.run_forever())
        await wait_within(asyncio.gather(*(event.wait() for event in joined)), JOIN_TIMEOUT_SECONDS)
        log.info("notifications ready")

    @app.after_serving
    async def _stop() -> None:
        await stop_tasks(tasks)
        state = app.extensions.pop(EXTENSION_KEY, None)
        if state:
            redis, producer, http = state
            await http.aclose()
            await producer.stop()
            await redis.aclose()

    return app
