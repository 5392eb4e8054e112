"""Outgoing webhooks to real HTTP receivers on 127.0.0.1: signed bodies with the error excerpt,
retries, slow receivers, coalescing, and the address policy checked right before sending."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time

import httpx

from gobuild.platform.build_state import BuildState
from gobuild.platform.events import TOPIC_BUILD_STATUS, BuildErrorsFound
from gobuild.platform.notifications.outgoing import OutgoingHttp
from gobuild.platform.stores.deliveries import DeliveryQueue
from tests.conftest import wait_until
from tests.kafka_reading import read_events
from tests.notifications.conftest import (
    DASHBOARD_URL,
    HOOK_SECRET,
    Received,
    StartNotifications,
    StartReceiver,
)
from tests.notifications.events import BuildEvents


def signature_is_valid(received: Received, secret: str) -> bool:
    """What a receiver does: the HMAC-SHA256 of the raw body, compared in constant time."""
    expected = "sha256=" + hmac.new(secret.encode(), received.body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, received.headers["X-Gobuild-Signature-256"])


async def test_a_failure_webhook_is_signed_and_quotes_the_error_line(
    start_notifications: StartNotifications, start_receiver: StartReceiver
) -> None:
    receiver = await start_receiver()
    stack = await start_notifications(allow_private_addresses=True)
    project = await stack.project()
    await stack.hook(project, receiver.url, ["failed"])
    build = BuildEvents(project.id)

    await stack.publish(
        build.status(BuildState.RUNNING, step="build"),
        build.log(0, "> site@1.0.0 build", "> vite build"),
        build.log(
            1, "\x1b[31msrc/main.ts:3:7 - error TS2322: Type 'string' is not 'number'.\x1b[0m"
        ),
        build.log(2, "Build failed: step 'build' exited with code 2"),
        build.completed(BuildState.FAILED, error="step 'build' exited with code 2"),
    )

    await wait_until(lambda: receiver.delivered(), timeout=30, message="no webhook arrived")
    [received] = receiver.received
    assert signature_is_valid(received, HOOK_SECRET)
    assert not signature_is_valid(received, "another-secret-of-some-length")
    assert received.headers["X-Gobuild-Event"] == "failed"
    body = received.json()
    assert body["event"] == "failed"
    assert body["project"] == {"id": project.id, "name": project.name}
    [summary] = body["builds"]
    assert summary["build_id"] == build.build_id
    assert summary["step"] == "build"
    assert summary["url"] == f"{DASHBOARD_URL}/builds/{build.build_id}"
    error_line = "src/main.ts:3:7 - error TS2322: Type 'string' is not 'number'."
    assert error_line in summary["error_lines"]
    assert "> vite build" not in summary["error_lines"]
    # Slack's `text`: the headline, the failing step and the excerpt.
    assert body["text"].startswith(f"{project.name}: build #3 failed")
    assert "at step build" in body["text"]
    assert error_line in body["text"]

    # The findings are published for the dashboard too.
    events = await read_events(stack.settings, [TOPIC_BUILD_STATUS], expected=4, wait=10)
    found = [e for e in events if isinstance(e, BuildErrorsFound)]
    assert [line for e in found for line in e.lines] == [
        error_line,
        "Build failed: step 'build' exited with code 2",
    ]
    assert {e.build_id for e in found} == {build.build_id}


async def test_a_receiver_answering_500_twice_then_200_gets_the_event_exactly_once(
    start_notifications: StartNotifications, start_receiver: StartReceiver
) -> None:
    receiver = await start_receiver([500, 500, 200])
    stack = await start_notifications(allow_private_addresses=True)
    project = await stack.project()
    await stack.hook(project, receiver.url, ["succeeded"])
    build = BuildEvents(project.id)

    await stack.publish(build.completed(BuildState.SUCCEEDED, deployment_url="http://x.localhost/"))

    await wait_until(lambda: receiver.delivered(), timeout=30, message="never delivered")
    await asyncio.sleep(1.5)  # time for a wrong extra attempt to show
    assert [r.status for r in receiver.received] == [500, 500, 200]
    assert len(receiver.delivered()) == 1
    # Every attempt is the same delivery, so a receiver can tell a retry from a new event.
    assert len({r.headers["X-Gobuild-Delivery"] for r in receiver.received}) == 1
    [logged] = await DeliveryQueue(stack.redis).log(project.id, 10)
    assert (logged.status, logged.attempts, logged.response_code) == ("delivered", 3, 200)


async def test_a_receiver_that_keeps_failing_is_given_up_and_marked(
    start_notifications: StartNotifications, start_receiver: StartReceiver
) -> None:
    receiver = await start_receiver([503])
    stack = await start_notifications(allow_private_addresses=True, notification_max_attempts=3)
    project = await stack.project()
    await stack.hook(project, receiver.url, ["failed"])
    build = BuildEvents(project.id)

    await stack.publish(build.completed(BuildState.FAILED, error="exit code 1"))

    async def given_up() -> bool:
        log = await DeliveryQueue(stack.redis).log(project.id, 10)
        return bool(log) and log[0].status == "failed"

    await wait_until(given_up, timeout=30, message="the delivery was never given up")
    [logged] = await DeliveryQueue(stack.redis).log(project.id, 10)
    assert (logged.attempts, logged.response_code) == (3, 503)
    assert logged.error is not None and logged.error.startswith("given up after 3 attempt(s)")
    assert len(receiver.received) == 3


async def test_a_receiver_that_hangs_does_not_delay_another_receiver(
    start_notifications: StartNotifications, start_receiver: StartReceiver
) -> None:
    hanging = await start_receiver(hang=True)
    quick = await start_receiver()
    stack = await start_notifications(allow_private_addresses=True, notification_timeout_seconds=20)
    project = await stack.project()
    await stack.hook(project, hanging.url, ["failed"])
    await stack.hook(project, quick.url, ["failed"])
    build = BuildEvents(project.id)

    await stack.publish(build.completed(BuildState.FAILED, error="exit code 1"))
    published = time.monotonic()

    await wait_until(lambda: quick.delivered(), timeout=15, message="the quick receiver waited")
    assert time.monotonic() - published < 10  # well within the hanging receiver's 20 s
    assert hanging.received == []  # still waiting for its answer


async def test_ten_status_changes_within_a_second_give_one_message_per_subscribed_stage(
    start_notifications: StartNotifications, start_receiver: StartReceiver
) -> None:
    receiver = await start_receiver()
    stack = await start_notifications(allow_private_addresses=True)
    project = await stack.project()
    await stack.hook(project, receiver.url, ["started", "succeeded"])
    build = BuildEvents(project.id)
    running = build.status(BuildState.RUNNING, step="install")
    changes = [
        build.status(BuildState.QUEUED),
        build.status(BuildState.DISPATCHED),
        running,
        running,  # delivered twice by the broker
        build.status(BuildState.RUNNING, step="build"),
        build.status(BuildState.RUNNING, step="test"),
        build.status(BuildState.RUNNING, step="deploy"),
        build.completed(BuildState.SUCCEEDED, deployment_url="http://x.localhost/"),
        build.status(BuildState.SUCCEEDED),
        build.completed(BuildState.SUCCEEDED, deployment_url="http://x.localhost/"),
    ]

    started = time.monotonic()
    await stack.publish(*changes)
    assert time.monotonic() - started < 1.0

    await wait_until(lambda: len(receiver.received) >= 2, timeout=30)
    await asyncio.sleep(2)  # past the coalescing window: nothing more may come
    assert sorted(r.json()["event"] for r in receiver.received) == ["started", "succeeded"]


async def test_a_burst_of_builds_failing_at_once_is_one_message_naming_them_all(
    start_notifications: StartNotifications, start_receiver: StartReceiver
) -> None:
    receiver = await start_receiver()
    stack = await start_notifications(allow_private_addresses=True, notification_coalesce_seconds=3)
    project = await stack.project()
    await stack.hook(project, receiver.url, ["failed"])
    builds = [BuildEvents(project.id, number=n) for n in range(1, 51)]

    await stack.publish(*(b.completed(BuildState.FAILED, error="exit code 1") for b in builds))

    async def all_told() -> bool:
        named = [s["build_id"] for r in receiver.received for s in r.json()["builds"]]
        return len(named) >= 50

    await wait_until(all_told, timeout=30, message="not every build was reported")
    named = [s["build_id"] for r in receiver.received for s in r.json()["builds"]]
    assert sorted(named) == sorted(b.build_id for b in builds)  # each build once
    assert len(receiver.received) <= 3  # not 50 messages
    assert "builds failed" in receiver.received[0].json()["text"]


async def test_a_name_that_resolves_to_loopback_at_delivery_time_is_refused(
    start_receiver: StartReceiver,
) -> None:
    """DNS rebinding: the hook's name passed when it was registered; now it says 127.0.0.1."""
    receiver = await start_receiver()

    async def rebound(host: str, port: int) -> list[str]:
        return ["127.0.0.1"]

    async with httpx.AsyncClient() as client:
        http = OutgoingHttp(client, timeout=3, allow_private_addresses=False, resolve=rebound)
        outcome = await http.post(
            f"http://hooks.example.com:{receiver.port}/hook",
            content=b"{}",
            headers={"Content-Type": "application/json"},
            checked=True,
        )

    assert not outcome.delivered and not outcome.retryable
    assert outcome.error is not None and "127.0.0.1" in outcome.error
    assert receiver.received == []
