"""Request and response bodies of the public API (validated at the edge, described in OpenAPI).

Request models forbid unknown fields, so a misspelt field is a 422 naming it.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, RootModel, field_validator

from gobuild.platform.auth.api_keys import MAX_NAME_LENGTH as MAX_KEY_NAME_LENGTH
from gobuild.platform.auth.permissions import PrincipalKind, ProjectRole, Scope
from gobuild.platform.auth.users import (
    MAX_PASSWORD_LENGTH,
    USERNAME_PATTERN,
    UserError,
    normalize_email,
)
from gobuild.platform.records import PROJECT_NAME_PATTERN, Build, Provider
from gobuild.platform.repo_url import InvalidRepoUrl, validate_repo_url

# A branch name git accepts (`git check-ref-format --branch`), kept deliberately strict.
BRANCH_PATTERN = re.compile(
    r"^(?!-)(?!.*\.\.)(?!.*//)(?!.*@\{)(?!.*\.lock$)[\w./@+-]{1,200}(?<![./])$"
)
SHA_PATTERN = r"^[0-9a-f]{40}([0-9a-f]{24})?$"
MIN_PASSWORD_LENGTH = 8
# Opaque tokens and codes GoBuild hands out are 43 characters; allow headroom, refuse essays.
MAX_TOKEN_LENGTH = 512


def check_branch(value: str) -> str:
    if not BRANCH_PATTERN.match(value) or value.startswith("/") or "/." in value:
        raise ValueError(f"{value!r} is not a valid branch name")
    return value


class RequestBody(BaseModel):
    """Base of every JSON request body: unknown fields are refused."""

    model_config = ConfigDict(extra="forbid")


# Errors


class ErrorBody(BaseModel):
    """An error: what went wrong (`error`) and, where useful, the details (`detail`)."""

    error: str
    detail: Any = None


# Projects


class ProjectCreate(RequestBody):
    name: str = Field(
        pattern=PROJECT_NAME_PATTERN, description="DNS label: the project's host name"
    )
    repo_url: str = Field(description="https:// URL or absolute local path of the git repository")
    provider: Provider = "github"
    production_branch: str = "main"
    build_tags: bool = False
    webhook_secret: str | None = Field(default=None, min_length=16, max_length=256)

    @field_validator("repo_url")
    @classmethod
    def _repo_url(cls, value: str) -> str:
        try:
            return validate_repo_url(value)
        except InvalidRepoUrl as exc:
            raise ValueError(str(exc)) from exc

    @field_validator("production_branch")
    @classmethod
    def _branch(cls, value: str) -> str:
        return check_branch(value)


class ProjectView(BaseModel):
    """A project, with the caller's role in it (none for admins who are not members)."""

    id: str
    name: str
    repo_url: str
    provider: Provider
    production_branch: str
    build_tags: bool
    created_at: datetime
    production_url: str
    webhook_url: str
    production_deployment_id: str | None = None
    role: ProjectRole | None = None


class ProjectCreated(ProjectView):
    """The new project; its webhook secret is shown here, once."""

    webhook_secret: str


class ProjectList(BaseModel):
    projects: list[ProjectView]


class WebhookSecretRotated(BaseModel):
    """The new webhook secret (shown once); the old one works until the time given."""

    webhook_secret: str
    previous_secret_expires_at: datetime | None


# Members


class MemberSet(RequestBody):
    username: str = Field(max_length=39)
    role: ProjectRole


class MemberView(BaseModel):
    username: str
    role: ProjectRole


class MemberList(BaseModel):
    members: list[MemberView]


# Builds


class BuildCreate(RequestBody):
    """Build a branch (its newest commit) or one exact commit of it, now."""

    branch: str | None = None
    commit_sha: str | None = Field(default=None, pattern=SHA_PATTERN)

    @field_validator("branch")
    @classmethod
    def _branch(cls, value: str | None) -> str | None:
        return None if value is None else check_branch(value)


class BuildListQuery(BaseModel):
    limit: int = Field(default=50, ge=1, le=500, description="how many builds, newest first")


class LogQuery(BaseModel):
    follow: str | None = Field(
        default=None, description="`1`, `true` or `yes`: stream the log until the build ends"
    )


class BuildView(Build):
    """A build, with the links to its log and artifact."""

    log_url: str
    artifact_url: str | None


class BuildList(BaseModel):
    builds: list[BuildView]


class BuildAccepted(BaseModel):
    """The build is recorded and queued; follow it at `status_url`."""

    build_id: str
    status_url: str


class CancelAccepted(BaseModel):
    build_id: str
    state: str
    cancel_requested: bool


# Webhooks


class WebhookPayload(RootModel[dict[str, Any]]):
    """The provider's JSON payload, as sent (verified against the raw bytes)."""


class GitHubDeliveryHeaders(BaseModel):
    x_github_event: str = Field(description="`push` or `ping`")
    x_github_delivery: str | None = Field(default=None, description="delivery id (dedupe)")
    x_hub_signature_256: str = Field(description="`sha256=` HMAC of the body with the secret")


class GitLabDeliveryHeaders(BaseModel):
    x_gitlab_event: str = Field(description="`Push Hook` or `Tag Push Hook`")
    x_gitlab_token: str = Field(description="the project's webhook secret")
    idempotency_key: str | None = Field(default=None, description="delivery id (dedupe)")


class WebhookAccepted(BaseModel):
    """Builds were recorded and queued, one per matching project."""

    build_id: str
    build_ids: list[str]
    status_url: str


class WebhookHandled(BaseModel):
    """Handled without a new build: a ping, a skipped push or a redelivery."""

    ok: bool | None = None
    event: str | None = None
    project_ids: list[str] | None = None
    skipped: str | None = None
    duplicate: bool | None = None
    detail: str | None = None
    build_id: str | None = None
    build_ids: list[str] | None = None


# Sessions and tokens


class LoginRequest(RequestBody):
    username: str = Field(min_length=1, max_length=254)
    password: str = Field(min_length=1, max_length=MAX_PASSWORD_LENGTH)


class RefreshRequest(RequestBody):
    refresh_token: str = Field(min_length=1, max_length=MAX_TOKEN_LENGTH)


class LogoutRequest(RequestBody):
    refresh_token: str | None = Field(
        default=None,
        max_length=MAX_TOKEN_LENGTH,
        description="also revoke this refresh token (and its whole family)",
    )


class CodeExchange(RequestBody):
    code: str = Field(min_length=1, max_length=MAX_TOKEN_LENGTH)


class PasswordChange(RequestBody):
    current_password: str = Field(min_length=1, max_length=MAX_PASSWORD_LENGTH)
    new_password: str = Field(min_length=MIN_PASSWORD_LENGTH, max_length=MAX_PASSWORD_LENGTH)


class MeView(BaseModel):
    """Who the caller is and what they may do."""

    username: str
    kind: PrincipalKind
    is_admin: bool
    roles: list[str]
    projects: dict[str, ProjectRole]
    scopes: list[Scope] | None = Field(description="an API key's scopes; null: not narrowed")
    key_id: str | None = None
    email: str | None = None
    name: str | None = None


class OAuthCallbackQuery(BaseModel):
    code: str | None = Field(default=None, description="the provider's authorization code")
    state: str | None = Field(default=None, description="the state of the sign-in started")
    error: str | None = Field(default=None, description="why the provider did not sign in")
    error_description: str | None = None


# Users


class UserCreate(RequestBody):
    username: str = Field(pattern=USERNAME_PATTERN.pattern)
    password: str = Field(min_length=MIN_PASSWORD_LENGTH, max_length=MAX_PASSWORD_LENGTH)
    email: str | None = Field(default=None, max_length=254)
    email_verified: bool = Field(
        default=False,
        description="the admin vouches for the email: a GitHub / GitLab sign-in with the same "
        "verified email then signs in as this user",
    )
    admin: bool = False

    @field_validator("email")
    @classmethod
    def _email(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            return normalize_email(value)
        except UserError as exc:
            raise ValueError(str(exc)) from None


class UserView(BaseModel):
    username: str
    email: str | None
    email_verified: bool
    name: str | None
    is_admin: bool
    has_password: bool
    created_at: datetime


class UserList(BaseModel):
    users: list[UserView]


# API keys


class ApiKeyCreate(RequestBody):
    name: str = Field(min_length=1, max_length=MAX_KEY_NAME_LENGTH)
    scopes: list[Scope] = Field(min_length=1, max_length=len(Scope))
    expires_at: AwareDatetime | None = Field(default=None, description="ISO time with a zone")


class ApiKeyView(BaseModel):
    """An API key as listed: never the secret."""

    id: str
    prefix: str
    username: str
    name: str
    scopes: list[Scope]
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None


class ApiKeyCreated(ApiKeyView):
    """The new key; `key` is shown here, once, and cannot be retrieved again."""

    key: str


class ApiKeyList(BaseModel):
    keys: list[ApiKeyView]


# Health


class Health(BaseModel):
    status: Literal["ok"]


class Readiness(BaseModel):
    status: Literal["ready", "not ready"]
    checks: dict[str, str]
