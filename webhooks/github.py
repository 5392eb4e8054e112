"""Verify GitHub webhook deliveries and normalize `push` and `ping` into a `WebhookEvent`."""

from __future__ import annotations

import hashlib
import hmac
import re
from urllib.parse import parse_qs

from pydantic import BaseModel, ValidationError

from gobuild.webhooks.errors import MalformedPayload, UnsupportedEvent, malformed_from
from gobuild.webhooks.models import WebhookEvent
from gobuild.webhooks.refs import GitRef, GitSha, branch_and_tag, is_zero_sha

SUPPORTED_EVENTS = ("push", "ping")
FORM_CONTENT_TYPE = "application/x-www-form-urlencoded"

_SIGNATURE = re.compile(r"sha256=([0-9a-fA-F]{64})")
# A repository hook's API URL: `.../repos/<owner>/<name>/hooks/<id>` (GHES adds `/api/v3`).
_HOOK_REPO = re.compile(r"/repos/([^/]+/[^/]+)/hooks/\d+/?$")


def verify_github_signature(secret: str | bytes, body: bytes, header: str | None) -> bool:
    """True if `X-Hub-Signature-256` is `sha256=<hex HMAC-SHA256 of the raw body>`.

    An empty secret never verifies: anyone could compute that signature.
    """
    key = secret.encode() if isinstance(secret, str) else secret
    if not key or header is None:
        return False
    match = _SIGNATURE.fullmatch(header.strip())
    if match is None:
        return False
    expected = hmac.new(key, body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, match.group(1).lower())


def github_body_json(body: bytes, content_type: str | None) -> bytes:
    """The JSON document of a delivery: the body itself, or the `payload` field of a
    form-encoded delivery (a hook configured with content type `form`).

    Verify the signature over the raw body before calling this.
    """
    media_type = (content_type or "").split(";", 1)[0].strip().lower()
    if media_type != FORM_CONTENT_TYPE:
        return body
    try:
        fields = parse_qs(body.decode("ascii"), keep_blank_values=True, errors="strict")
    except UnicodeDecodeError as exc:
        raise MalformedPayload("form-encoded GitHub delivery is not percent-encoded") from exc
    payloads = fields.get("payload", [])
    if len(payloads) != 1:
        raise MalformedPayload("form-encoded GitHub delivery needs exactly one 'payload' field")
    return payloads[0].encode()


class _Repository(BaseModel):
    full_name: str
    clone_url: str | None = None
    ssh_url: str | None = None
    html_url: str | None = None

    def urls(self) -> list[str]:
        return [u for u in (self.clone_url, self.ssh_url, self.html_url, self.full_name) if u]


class _Pusher(BaseModel):
    name: str | None = None


class _Sender(BaseModel):
    login: str | None = None


class _HeadCommit(BaseModel):
    id: GitSha
    message: str | None = None


class _PushPayload(BaseModel):
    ref: GitRef
    after: GitSha
    deleted: bool = False
    repository: _Repository
    pusher: _Pusher | None = None
    sender: _Sender | None = None
    head_commit: _HeadCommit | None = None


class _Hook(BaseModel):
    url: str | None = None


class _PingPayload(BaseModel):
    repository: _Repository | None = None
    hook: _Hook | None = None


def parse_github_delivery(
    event_name: str | None, delivery_id: str | None, body: bytes
) -> WebhookEvent:
    """Normalize a verified delivery; `event_name` is `X-GitHub-Event`, `body` the JSON."""
    if event_name not in SUPPORTED_EVENTS:
        shown = f"'{event_name}'" if event_name else "(no X-GitHub-Event header)"
        raise UnsupportedEvent(
            f"GitHub event {shown} is not supported; GoBuild builds from "
            + " and ".join(SUPPORTED_EVENTS)
        )
    delivery_id = delivery_id or None
    if event_name == "ping":
        return _parse_ping(delivery_id, body)
    return _parse_push(delivery_id, body)


def _parse_push(delivery_id: str | None, body: bytes) -> WebhookEvent:
    try:
        payload = _PushPayload.model_validate_json(body)
    except ValidationError as exc:
        raise malformed_from(exc, "GitHub push payload") from exc
    deleted = payload.deleted or is_zero_sha(payload.after)
    head = None if deleted else payload.head_commit
    branch, tag = branch_and_tag(payload.ref)
    author = (payload.pusher and payload.pusher.name) or (payload.sender and payload.sender.login)
    return WebhookEvent(
        provider="github",
        kind="push",
        delivery_id=delivery_id,
        repo_urls=payload.repository.urls(),
        repo_full_name=payload.repository.full_name,
        ref=payload.ref,
        branch=branch,
        tag=tag,
        # For an annotated tag `after` names the tag object; head_commit is the commit itself.
        commit_sha=None if deleted else (head.id if head else payload.after),
        deleted=deleted,
        commit_message=head.message if head else None,
        author=author or None,
    )


def _parse_ping(delivery_id: str | None, body: bytes) -> WebhookEvent:
    try:
        payload = _PingPayload.model_validate_json(body)
    except ValidationError as exc:
        raise malformed_from(exc, "GitHub ping payload") from exc
    full_name: str | None = None
    urls: list[str] = []
    if payload.repository is not None:
        full_name, urls = payload.repository.full_name, payload.repository.urls()
    elif payload.hook is not None and payload.hook.url:
        # Organization and app hooks have no repository; their URLs do not match.
        match = _HOOK_REPO.search(payload.hook.url)
        if match is not None:
            full_name = match.group(1)
            urls = [full_name]
    return WebhookEvent(
        provider="github",
        kind="ping",
        delivery_id=delivery_id,
        repo_urls=urls,
        repo_full_name=full_name,
    )
