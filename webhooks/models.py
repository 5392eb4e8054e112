"""The one event type GitHub and GitLab deliveries are normalized into."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, field_validator

WebhookProvider = Literal["github", "gitlab"]
WebhookKind = Literal["push", "ping"]


class WebhookEvent(BaseModel):
    """A verified, provider-neutral delivery: which repository, which ref, which commit."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    provider: WebhookProvider
    kind: WebhookKind
    delivery_id: str | None = None
    # Every URL and name the repository is known by (clone, ssh, web, `owner/name`), in the
    # payload's order without duplicates; the gateway matches projects against these.
    repo_urls: list[str] = []
    repo_full_name: str | None = None
    ref: str | None = None
    branch: str | None = None
    tag: str | None = None
    # The commit the ref now points at; None when the ref was deleted.
    commit_sha: str | None = None
    deleted: bool = False
    commit_message: str | None = None
    author: str | None = None

    @field_validator("repo_urls")
    @classmethod
    def _unique_non_empty(cls, urls: list[str]) -> list[str]:
        return list(dict.fromkeys(url.strip() for url in urls if url and url.strip()))

    @property
    def is_branch(self) -> bool:
        return self.branch is not None

    @property
    def is_tag(self) -> bool:
        return self.tag is not None
