"""E-mail to members who opted in, through a real SMTP server (aiosmtpd) on 127.0.0.1."""

from __future__ import annotations

import asyncio
from email.message import EmailMessage

from gobuild.platform.build_state import BuildState
from tests.conftest import wait_until
from tests.notifications.conftest import DASHBOARD_URL, SmtpServer, StartNotifications
from tests.notifications.events import BuildEvents


def parts(message: EmailMessage) -> dict[str, str]:
    """content type -> text of each part."""
    return {
        part.get_content_type(): part.get_content()  # type: ignore[attr-defined]
        for part in message.walk()
        if not part.is_multipart()
    }


async def test_a_failed_build_emails_the_members_who_opted_in_with_text_and_html(
    start_notifications: StartNotifications, smtp_server: SmtpServer
) -> None:
    stack = await start_notifications(
        smtp_host="127.0.0.1", smtp_port=smtp_server.port, smtp_starttls=False
    )
    project = await stack.project()
    await stack.subscriber(project, "jane", "jane@example.com", ["failed"])
    await stack.subscriber(project, "joe", "joe@example.com", ["succeeded"])
    build = BuildEvents(project.id)

    await stack.publish(
        build.status(BuildState.RUNNING, step="test"),
        build.log(0, "FAIL src/<App>.test.tsx", "  expected <b>1</b> & got 2"),
        build.completed(BuildState.FAILED, error="step 'test' exited with <code> 1"),
    )

    await wait_until(lambda: smtp_server.mailbox.messages, timeout=30, message="no e-mail")
    await asyncio.sleep(1)  # joe opted in to successes only: nothing for him
    [message] = smtp_server.mailbox.messages
    assert smtp_server.mailbox.recipients == [["jane@example.com"]]
    assert message["Subject"] == f"[GoBuild] {project.name}: build #3 failed"
    assert message.get_content_type() == "multipart/alternative"
    body = parts(message)
    assert set(body) == {"text/plain", "text/html"}

    text = body["text/plain"]
    assert "build #3" in text and "failed at step test" in text
    assert "FAIL src/<App>.test.tsx" in text
    assert f"{DASHBOARD_URL}/builds/{build.build_id}" in text

    page = body["text/html"]
    assert "FAIL src/&lt;App&gt;.test.tsx" in page
    assert "exited with &lt;code&gt; 1" in page
    assert "<App>" not in page and "<code>" not in page
    assert f'href="{DASHBOARD_URL}/builds/{build.build_id}"' in page
