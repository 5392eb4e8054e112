"""Verify and normalize GitHub and GitLab webhook deliveries into one `WebhookEvent`."""

from gobuild.webhooks.errors import (
    InvalidSignature,
    MalformedPayload,
    UnsupportedEvent,
    WebhookError,
)
from gobuild.webhooks.github import (
    github_body_json,
    parse_github_delivery,
    verify_github_signature,
)
from gobuild.webhooks.gitlab import parse_gitlab_delivery, verify_gitlab_token
from gobuild.webhooks.models import WebhookEvent

__all__ = [
    "InvalidSignature",
    "MalformedPayload",
    "UnsupportedEvent",
    "WebhookError",
    "WebhookEvent",
    "github_body_json",
    "parse_github_delivery",
    "parse_gitlab_delivery",
    "verify_github_signature",
    "verify_gitlab_token",
]
