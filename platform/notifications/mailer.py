"""Sending e-mail over SMTP (GOBUILD_SMTP_*), with STARTTLS when configured.

The standard library's `smtplib` runs in a worker thread; every socket operation has the
delivery timeout. A 4xx answer, a dropped connection or a timeout is worth another attempt, a
5xx answer (an unknown recipient, say) is not.
"""

from __future__ import annotations

import asyncio
import smtplib
import ssl
from email.message import EmailMessage

from gobuild.platform.config import NotificationSettings
from gobuild.platform.notifications.outcome import Outcome, delivered, give_up, retry

SMTP_OK = 250


class SmtpMailer:
    """Sends one message per connection (notifications are few and far between)."""

    def __init__(self, settings: NotificationSettings) -> None:
        self._settings = settings

    @property
    def sender(self) -> str:
        return self._settings.smtp_from

    async def send(self, message: EmailMessage) -> Outcome:
        try:
            await asyncio.to_thread(self._send, message)
        except smtplib.SMTPRecipientsRefused as exc:
            codes = [code for code, _ in exc.recipients.values()]
            code = codes[0] if codes else None
            text = f"recipient refused: {exc.recipients}"
            return retry(text, code) if code and 400 <= code < 500 else give_up(text, code)
        except smtplib.SMTPResponseException as exc:
            text = f"SMTP {exc.smtp_code}: {exc.smtp_error!r}"
            return (
                retry(text, exc.smtp_code) if exc.smtp_code < 500 else give_up(text, exc.smtp_code)
            )
        except (smtplib.SMTPException, OSError) as exc:
            return retry(f"SMTP connection failed: {type(exc).__name__}: {exc}")
        return delivered(SMTP_OK)

    def _send(self, message: EmailMessage) -> None:
        settings = self._settings
        timeout = settings.notification_timeout_seconds
        with smtplib.SMTP(settings.smtp_host, settings.smtp_port, timeout=timeout) as smtp:
            if settings.smtp_starttls:
                smtp.starttls(context=ssl.create_default_context())
            if settings.smtp_username:
                smtp.login(settings.smtp_username, settings.smtp_password)
            smtp.send_message(message)
