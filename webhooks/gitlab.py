"""Verify GitLab webhook deliveries and normalize `Push Hook` / `Tag Push Hook` events."""

from __future__ import annotations

import hmac

from pydantic import BaseModel, ValidationError

from gobuild.webhooks.errors import MalformedPayload, UnsupportedEvent, malformed_from
from gobuild.webhooks.models import WebhookEvent
from gobuild.webhooks.refs import GitRef, GitSha, branch_and_tag, is_zero_sha

# `X-Gitlab-Event` header value -> the payload's `object_kind`.
SUPPORTED_EVENTS = {"Push Hook": "push", "Tag Push Hook": "tag_push"}


def verify_gitlab_token(secret: str, header: str | None) -> bool:
    """True if `X-Gitlab-Token` equals the secret (GitLab sends it in plain text).

    An empty secret never verifies.
    """
    if not secret or header is None:
        return False
    return hmac.compare_digest(secret.encode(), header.encode())


class _Project(BaseModel):
    path_with_namespace: str
    git_http_url: str | None = None
    git_ssh_url: str | None = None
    web_url: str | None = None


class _Repository(BaseModel):
    git_http_url: str | None = None
    git_ssh_url: str | None = None
    homepage: str | None = None
    url: str | None = None


class _Commit(BaseModel):
    id: str
    message: str | None = None


class _PushPayload(BaseModel):
    object_kind: str
    ref: GitRef
    after: GitSha | None = None
    checkout_sha: GitSha | None = None
    user_name: str | None = None
    project: _Project
    repository: _Repository | None = None
    commits: list[_Commit] = []

    def repo_urls(self) -> list[str]:
        project, repo = self.project, self.repository or _Repository()
        urls = (
            project.git_http_url,
            project.git_ssh_url,
            project.web_url,
            project.path_with_namespace,
            repo.git_http_url,
            repo.git_ssh_url,
            repo.homepage,
            repo.url,
        )
        return [url for url in urls if url]

    def commit_sha(self) -> str | None:
        """The commit the ref now points at; None for a deleted ref (all zeros or null)."""
        for sha in (self.checkout_sha, self.after):
            if sha is not None and not is_zero_sha(sha):
                return sha
        return None


def parse_gitlab_delivery(
    event_name: str | None, delivery_id: str | None, body: bytes
) -> WebhookEvent:
    """Normalize a verified delivery; `event_name` is `X-Gitlab-Event`, `body` the JSON."""
    if event_name not in SUPPORTED_EVENTS:
        shown = f"'{event_name}'" if event_name else "(no X-Gitlab-Event header)"
        raise UnsupportedEvent(
            f"GitLab event {shown} is not supported; GoBuild builds from "
            + " and ".join(f"'{name}'" for name in SUPPORTED_EVENTS)
        )
    try:
        payload = _PushPayload.model_validate_json(body)
    except ValidationError as exc:
        raise malformed_from(exc, f"GitLab {event_name} payload") from exc
    if payload.object_kind != SUPPORTED_EVENTS[event_name]:
        raise MalformedPayload(
            f"GitLab {event_name} payload has object_kind '{payload.object_kind}',"
            f" expected '{SUPPORTED_EVENTS[event_name]}'"
        )
    sha = payload.commit_sha()
    head = next((commit for commit in payload.commits if commit.id == sha), None)
    branch, tag = branch_and_tag(payload.ref)
    return WebhookEvent(
        provider="gitlab",
        kind="push",
        delivery_id=delivery_id or None,
        repo_urls=payload.repo_urls(),
        repo_full_name=payload.project.path_with_namespace,
        ref=payload.ref,
        branch=branch,
        tag=tag,
        commit_sha=sha,
        deleted=sha is None,
        commit_message=head.message if head else None,
        author=payload.user_name or None,
    )
