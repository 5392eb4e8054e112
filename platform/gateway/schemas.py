"""Request and response bodies of the public API (validated at the edge, described in OpenAPI).

Request models forbid unknown fields, so a misspelt field is a 422 naming it.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    RootModel,
    ValidationInfo,
    field_validator,
)

from gobuild.platform.auth.api_keys import MAX_NAME_LENGTH as MAX_KEY_NAME_LENGTH
from gobuild.platform.auth.permissions import PrincipalKind, ProjectRole, Scope
from gobuild.platform.auth.users import (
    MAX_PASSWORD_LENGTH,
    USERNAME_PATTERN,
    UserError,
    normalize_email,
)
from gobuild.platform.build_settings import (
    MAX_COMMAND_LENGTH,
    MAX_FOLDER_LENGTH,
    MAX_IMAGE_REFERENCE,
    check_command,
    check_image_reference,
    check_relative_folder,
)
from gobuild.platform.build_state import BuildState
from gobuild.platform.events import ArtifactRef, CacheKind
from gobuild.platform.notification_records import (
    NOTIFICATION_STAGES,
    DeliveryStatus,
    NotificationStage,
    ReceiverKind,
)
from gobuild.platform.records import (
    BUILD_TARGETS,
    PROJECT_NAME_PATTERN,
    Build,
    BuildStep,
    BuildTarget,
    Provider,
)
from gobuild.platform.repo_url import InvalidRepoUrl, validate_repo_url
from gobuild.platform.retention_records import (
    RetentionOverrides,
    RetentionPolicy,
    RetentionReport,
)
from gobuild.platform.stores.build_queue import Priority, QueueReason
from gobuild.platform.stores.resource_samples import ResourceSample
from gobuild.platform.stores.retention import REPORTS_KEPT

# A builder label a project may require: `node`, or `key=value` (`arch=amd64`).
LABEL_PATTERN = r"^[a-z0-9][a-z0-9._-]*(=[a-z0-9._-]+)?$"
MAX_REQUIRED_LABELS = 20
MAX_LABEL_LENGTH = 100
MAX_DEPENDENCIES = 20
# A project id or name (`depends_on`).
MAX_PROJECT_REF_LENGTH = 64
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
        pattern=PROJECT_NAME_PATTERN,
        description="DNS label: the project's host name. GoBuild's own host names (api, www, "
        "app, admin, auth, dashboard, docs, status, webhooks, static, assets, mail and the "
        "first label of the public and dashboard hosts) are reserved (422).",
    )
    repo_url: str = Field(
        description="https:// URL of the git repository; `user:token@` credentials in it are "
        "kept encrypted and shown as `***`. Hosts on internal networks, GoBuild's own hosts and "
        "absolute local paths (with GOBUILD_ALLOW_LOCAL_REPOS=true) only for instance admins (422)."
    )
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


class ProjectReference(BaseModel):
    """Another project, by id, and by name where the caller may read it."""

    id: str
    name: str | None


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
    production_pinned: bool = Field(
        default=False,
        description="the production alias was promoted by hand and stays on its deployment "
        "until un-pinned (shown by `GET /api/projects/{id}`)",
    )
    role: ProjectRole | None = None
    forge_token_set: bool = Field(
        default=False,
        description="a token for commit statuses is set (`PUT /api/projects/{id}/forge-token`; "
        "never shown)",
    )
    forge_url: str | None = Field(
        default=None,
        description="the forge API base URL commit statuses go to (null: the instance's "
        "GitHub / GitLab URL)",
    )
    install_command: str | None = Field(
        default=None,
        description="build settings (`PATCH /api/projects/{id}`), each overridden by the "
        "repository's gobuild.toml; null: detected from the repository",
    )
    build_command: str | None = None
    output_dir: str | None = None
    image: str | None = None
    root_dir: str | None = Field(
        default=None, description="the monorepo subfolder that is built (null: the root)"
    )
    cache_hit_rate: float | None = Field(
        default=None,
        description="the share of cache uses that were hits (not partial, not miss) in the "
        "project's last builds; null: no cache was used yet, or not shown (only "
        "`GET /api/projects/{id}` shows it)",
    )
    cache_size_bytes: int | None = Field(
        default=None,
        description="the bytes of every cache the project has (`GET /api/projects/{id}/caches`)",
    )
    auto_cancel: bool = Field(
        default=True,
        description="scheduling (`PATCH /api/projects/{id}`): a newer push to a branch cancels "
        "that branch's older queued and running builds",
    )
    concurrency_limit: int | None = Field(
        default=None, description="at most this many of its builds run at once (null: no limit)"
    )
    required_labels: list[str] = Field(
        default_factory=list, description="labels a builder must have to build it"
    )
    build_timeout_seconds: int | None = Field(
        default=None,
        description="its own build time limit (null: GOBUILD_BUILD_TIMEOUT_SECONDS)",
    )
    depends_on: list[str] = Field(
        default_factory=list,
        description="ids of the projects it depends on: a successful production build of one "
        "of them builds this project's production branch again",
    )
    dependencies: list[ProjectReference] = Field(
        default_factory=list,
        description="`depends_on` with names (null for a project the caller cannot read)",
    )


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


class QueueStatus(BaseModel):
    """Where a queued build waits: its place in the instance's queue and why it waits."""

    position: int = Field(description="1: the next build to start, among all waiting builds")
    priority: Priority = Field(description="production builds and redeploys go first")
    reason: QueueReason
    reason_text: str = Field(description="`reason` in words")
    queued_at: datetime
    estimated_start: datetime | None = Field(
        description="when a builder slot is expected to be free for it (null: cannot be told)"
    )


class BuildView(Build):
    """A build, with the links to its log and artifact and, while it is queued, its place in
    the queue."""

    log_url: str
    artifact_url: str | None
    queue: QueueStatus | None = Field(
        default=None, description="while the build is `queued`: its place and why it waits"
    )


class BuildList(BaseModel):
    builds: list[BuildView]


class BuildAccepted(BaseModel):
    """The build is recorded and queued; follow it at `status_url`."""

    build_id: str
    status_url: str


class BuildResources(BaseModel):
    """The build's resource samples (CPU and memory of its step containers), oldest first:
    the newest hour of them, kept for 30 days."""

    samples: list[ResourceSample]


class CancelAccepted(BaseModel):
    build_id: str
    state: str
    cancel_requested: bool


# The scheduler: the queue and the builders


class QueuedBuild(QueueStatus):
    """A waiting build the caller may read."""

    build_id: str
    project_id: str
    project_name: str
    number: int | None
    branch: str | None


class QueueTotals(BaseModel):
    """Counts over the whole instance (no build or project is named)."""

    waiting: int = Field(description="builds waiting for a builder")
    running: int = Field(description="builds given to a builder that have not ended")
    slots_total: int = Field(description="build slots of the online builders")
    slots_free: int


class QueueList(BaseModel):
    builds: list[QueuedBuild] = Field(
        description="the waiting builds of projects the caller may read, the next first; "
        "`position` is the place among all waiting builds"
    )
    totals: QueueTotals


class RunningBuild(BaseModel):
    build_id: str
    project_id: str | None = Field(description="null where the caller may not read the build")
    project_name: str | None


class BuilderView(BaseModel):
    """A builder: online while its heartbeat is current, lost for a day after it stopped."""

    id: str
    state: Literal["online", "lost"]
    host: str | None = Field(description="null for a lost builder")
    slots_total: int | None = Field(description="builds it runs at once (null: lost)")
    slots_free: int | None
    labels: list[str]
    cpus: int | None
    memory_bytes: int | None
    started_at: datetime | None
    last_seen: datetime | None = Field(description="its last heartbeat")
    running: list[RunningBuild] = Field(
        description="the builds given to it or running on it that have not ended"
    )


class BuilderList(BaseModel):
    builders: list[BuilderView] = Field(description="online builders first, then by id")


# Webhooks


class WebhookPayload(RootModel[dict[str, Any]]):
    """The provider's JSON payload, as sent (verified against the raw bytes)."""


class GitHubDeliveryHeaders(BaseModel):
    x_github_event: str = Field(description="`push` or `ping`")
    x_github_delivery: str | None = Field(
        default=None, description="delivery id (dedupe); without one, the body's SHA-256 is used"
    )
    x_hub_signature_256: str = Field(description="`sha256=` HMAC of the body with the secret")


class GitLabDeliveryHeaders(BaseModel):
    x_gitlab_event: str = Field(description="`Push Hook` or `Tag Push Hook`")
    x_gitlab_token: str = Field(description="the project's webhook secret")
    idempotency_key: str | None = Field(
        default=None, description="delivery id (dedupe); without one, the body's SHA-256 is used"
    )


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


# Deployments and the production alias


class DeploymentListQuery(BaseModel):
    limit: int = Field(default=50, ge=1, le=500, description="how many deployments, newest first")


class DeploymentView(BaseModel):
    """A deployment: one successful build's output, served at `url` for good."""

    id: str
    project_id: str
    build_id: str
    number: int = Field(description="the build's number in its project")
    branch: str | None
    commit_sha: str | None
    commit_message: str | None = None
    author: str | None = None
    production: bool = Field(description="built from the production branch")
    url: str
    created_at: datetime
    is_production_alias: bool = Field(description="the production alias serves it now")


class ProductionView(BaseModel):
    """A project's production alias: the deployment it serves and whether it is pinned there.

    While `pinned`, new production builds deploy at their own URLs only;
    `following_deployment_id` is the newest of them, which the alias serves again once
    un-pinned.
    """

    project_id: str
    url: str
    deployment_id: str | None
    pinned: bool
    following_deployment_id: str | None


class DeploymentList(BaseModel):
    production: ProductionView
    deployments: list[DeploymentView]


# Share links


class ShareCreate(RequestBody):
    expires_in: int | None = Field(
        default=None,
        ge=1,
        description="seconds the link works; default GOBUILD_SHARE_LINK_TTL_SECONDS, at most "
        "GOBUILD_SHARE_LINK_MAX_TTL_SECONDS (else 422)",
    )


class ShareListQuery(BaseModel):
    build_id: str | None = Field(default=None, description="only the links of this build")


class ShareLinkView(BaseModel):
    """A share link: whoever has `url` sees the build read-only until `expires_at`."""

    id: str
    build_id: str
    project_id: str | None
    created_by: str
    created_at: datetime
    expires_at: datetime
    url: str = Field(description="the read-only page of the build (the dashboard's)")
    token: str = Field(description="the secret in `url`, for `GET /api/shared/{token}`")


class ShareLinkList(BaseModel):
    links: list[ShareLinkView]


class SharedBuildView(BaseModel):
    """One build as a share link shows it: read-only, and nothing else of the instance."""

    id: str
    project_name: str
    number: int | None
    state: BuildState
    step: str | None
    reason: str | None
    branch: str | None
    tag: str | None
    commit_sha: str | None
    commit_message: str | None
    author: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    duration_seconds: float | None
    steps: list[BuildStep] = []
    artifact: ArtifactRef | None
    deployment_url: str | None
    peak_cpu_percent: float | None
    peak_memory_bytes: int | None
    log_url: str
    artifact_url: str | None
    link_expires_at: datetime


# The gateway's front door


class Welcome(BaseModel):
    """What `GET /` answers when no dashboard is configured (GOBUILD_DASHBOARD_URL)."""

    name: Literal["GoBuild"]
    api: str = Field(description="the API description")
    detail: str


# Notifications: commit statuses, outgoing webhooks, e-mail preferences

MAX_OUTGOING_URL_LENGTH = 2048


def check_outgoing_url(value: str) -> str:
    """An http(s) URL with a host, as outgoing hooks and forge URLs must be (where it points is
    checked by the route, against the address policy)."""
    parts = urlsplit(value)
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise ValueError("use an https:// (or http://) URL with a host name")
    if any(ch.isspace() or ord(ch) < 0x20 for ch in value):
        raise ValueError("the URL contains whitespace or control characters")
    return value


def check_unique(values: list[Any]) -> list[Any]:
    if len(set(values)) != len(values):
        raise ValueError("each value may appear once")
    return values


class ForgeTokenSet(RequestBody):
    token: str = Field(
        min_length=1,
        max_length=1024,
        description="GitHub: a token that may write commit statuses (fine-grained: “Commit "
        "statuses: write”; classic: `repo:status`); GitLab: a token with the `api` scope. Kept "
        "encrypted, never shown.",
    )
    forge_url: str | None = Field(
        default=None,
        max_length=MAX_OUTGOING_URL_LENGTH,
        description="the forge's API base URL for this project: GitHub Enterprise "
        "`https://github.example.com/api/v3`, a self-hosted GitLab `https://gitlab.example.com`. "
        "Default: GOBUILD_GITHUB_API_URL / GOBUILD_GITLAB_URL. Internal addresses are refused "
        "(422) unless GOBUILD_HOOKS_ALLOW_PRIVATE_ADDRESSES=true.",
    )

    @field_validator("forge_url")
    @classmethod
    def _forge_url(cls, value: str | None) -> str | None:
        return None if value is None else check_outgoing_url(value)


class HookCreate(RequestBody):
    url: str = Field(
        max_length=MAX_OUTGOING_URL_LENGTH,
        description="where the JSON body is POSTed (a Slack incoming webhook works as is). "
        "Hosts that resolve to loopback, link-local or private addresses are refused (422) "
        "unless GOBUILD_HOOKS_ALLOW_PRIVATE_ADDRESSES=true.",
    )
    events: list[NotificationStage] = Field(
        min_length=1, max_length=len(NOTIFICATION_STAGES), description="the stages to send"
    )
    secret: str | None = Field(
        default=None,
        min_length=16,
        max_length=256,
        description="signs each body (`X-GoBuild-Signature-256: sha256=<HMAC-SHA256 hex>`); "
        "omitted: one is generated and shown once",
    )

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        return check_outgoing_url(value)

    @field_validator("events")
    @classmethod
    def _events(cls, value: list[NotificationStage]) -> list[NotificationStage]:
        return check_unique(value)


class HookView(BaseModel):
    """An outgoing webhook (its secret is never shown again)."""

    id: str
    url: str
    events: list[NotificationStage]
    created_at: datetime
    created_by: str | None


class HookCreated(HookView):
    secret: str | None = Field(
        description="the generated signing secret, shown once (null when the request gave one)"
    )


class HookList(BaseModel):
    hooks: list[HookView]


class DeliveryListQuery(BaseModel):
    limit: int = Field(default=50, ge=1, le=500, description="how many deliveries, newest first")


class DeliveryView(BaseModel):
    """One notification to one receiver (about one or more builds)."""

    id: str
    kind: ReceiverKind = Field(description="hook, email, or the commit status on github / gitlab")
    receiver: str = Field(description="the hook id, the username, or the forge")
    stage: str = Field(description="the stage, or the commit status state (pending, success...)")
    build_ids: list[str]
    status: DeliveryStatus = Field(
        description="queued (waiting for its next attempt), sending, delivered, failed (given "
        "up), superseded (a newer commit status replaced it)"
    )
    attempts: int
    response_code: int | None = Field(description="the receiver's last HTTP (or SMTP) answer")
    error: str | None
    created_at: datetime
    updated_at: datetime
    next_attempt_at: datetime | None


class DeliveryList(BaseModel):
    deliveries: list[DeliveryView]


class NotificationPreferencesSet(RequestBody):
    events: list[NotificationStage] = Field(
        max_length=len(NOTIFICATION_STAGES),
        description="the stages to be e-mailed about (empty: no e-mail)",
    )
    projects: list[Annotated[str, Field(min_length=1, max_length=64)]] | None = Field(
        default=None,
        max_length=200,
        description="only these projects (ids); null: every project one is a member of",
    )

    @field_validator("events")
    @classmethod
    def _events(cls, value: list[NotificationStage]) -> list[NotificationStage]:
        return check_unique(value)


class NotificationPreferencesView(BaseModel):
    """Which stages the user is e-mailed about, and where the e-mail goes."""

    events: list[NotificationStage]
    projects: list[str] | None
    email: str | None = Field(description="the user's address; e-mail goes only to a verified one")
    email_verified: bool


# Retention


class ProjectRetentionView(BaseModel):
    """A project's retention: the policy that applies, the project's own overrides and the
    instance defaults (GOBUILD_RETENTION_*) they override."""

    project_id: str
    policy: RetentionPolicy
    overrides: RetentionOverrides = Field(description="null fields: the default applies")
    defaults: RetentionPolicy


class RetentionPolicyUpdate(RetentionOverrides):
    """The project's overrides, replacing the ones it had; a null or missing field takes the
    instance default (`{}` resets them all)."""

    model_config = ConfigDict(extra="forbid")


class RetentionRunQuery(BaseModel):
    dry_run: bool | None = Field(
        default=None,
        description="only report what would be removed (default: GOBUILD_RETENTION_DRY_RUN)",
    )


class RetentionReportQuery(BaseModel):
    limit: int = Field(default=20, ge=1, le=REPORTS_KEPT, description="how many, newest first")


class RetentionReportList(BaseModel):
    reports: list[RetentionReport]


# Build settings and variables


class ProjectSettingsUpdate(BaseModel):
    """Build and scheduling settings to change; a field left out is kept, null clears it
    (detection decides again). The repository's gobuild.toml overrides each build setting
    (`install`, `build`, `output`, `image`); `root_dir` is the monorepo subfolder that is
    built, where gobuild.toml is read and the output is found."""

    model_config = ConfigDict(extra="forbid")

    install_command: str | None = Field(
        default=None,
        max_length=MAX_COMMAND_LENGTH,
        description='shell command of the install step (`""` switches it off)',
    )
    build_command: str | None = Field(
        default=None,
        max_length=MAX_COMMAND_LENGTH,
        description='shell command of the build step (`""` switches it off)',
    )
    output_dir: str | None = Field(
        default=None,
        max_length=MAX_FOLDER_LENGTH,
        description="the folder that is deployed, relative to `root_dir`",
    )
    image: str | None = Field(
        default=None,
        max_length=MAX_IMAGE_REFERENCE,
        description="the build image (one this instance does not trust is pulled fresh)",
    )
    root_dir: str | None = Field(
        default=None,
        max_length=MAX_FOLDER_LENGTH,
        description="a relative folder of the repository, without `..`",
    )
    auto_cancel: bool = Field(
        default=True,
        description="a newer push to a branch cancels that branch's older queued and running "
        "builds (not null)",
    )
    concurrency_limit: int | None = Field(
        default=None,
        ge=1,
        le=1000,
        description="at most this many of the project's builds run at once; null: no limit",
    )
    required_labels: (
        list[Annotated[str, Field(pattern=LABEL_PATTERN, max_length=MAX_LABEL_LENGTH)]] | None
    ) = Field(
        default=None,
        max_length=MAX_REQUIRED_LABELS,
        description="labels a builder must have to build the project (`node`, `arch=amd64`); "
        "null or `[]`: any builder",
    )
    build_timeout_seconds: int | None = Field(
        default=None,
        ge=1,
        description="the project's build time limit; it may only lower the instance's "
        "GOBUILD_BUILD_TIMEOUT_SECONDS (else 422); null: the instance's limit",
    )
    depends_on: (
        list[Annotated[str, Field(min_length=1, max_length=MAX_PROJECT_REF_LENGTH)]] | None
    ) = Field(
        default=None,
        max_length=MAX_DEPENDENCIES,
        description="ids or names of projects the caller may read: a successful production "
        "build of one of them builds this project's production branch again. Not the project "
        "itself, and no cycle (422 naming it); null or `[]`: none",
    )

    @field_validator("install_command", "build_command")
    @classmethod
    def _command(cls, value: str | None, info: ValidationInfo) -> str | None:
        return None if value is None else check_command(value, str(info.field_name))

    @field_validator("output_dir", "root_dir")
    @classmethod
    def _folder(cls, value: str | None, info: ValidationInfo) -> str | None:
        return None if value is None else check_relative_folder(value, str(info.field_name))

    @field_validator("image")
    @classmethod
    def _image(cls, value: str | None) -> str | None:
        return None if value is None else check_image_reference(value)

    @field_validator("required_labels", "depends_on")
    @classmethod
    def _distinct_values(cls, value: list[str] | None) -> list[str]:
        """Null clears the list; a value named twice counts once (the first place kept)."""
        return list(dict.fromkeys(value or []))


MAX_VARIABLE_BYTES = 32 * 1024


class VariableSet(BaseModel):
    """A build variable's value, whether it is secret, and which builds get it."""

    model_config = ConfigDict(extra="forbid")

    value: str = Field(max_length=MAX_VARIABLE_BYTES)
    secret: bool = Field(
        default=False,
        description="kept encrypted, never shown again, masked as `***` in build logs",
    )
    targets: list[BuildTarget] = Field(
        default_factory=lambda: list(BUILD_TARGETS),
        min_length=1,
        max_length=len(BUILD_TARGETS),
        description="production builds (the production branch), preview builds (every other "
        "branch), or both",
    )

    @field_validator("value")
    @classmethod
    def _no_nul(cls, value: str) -> str:
        if "\x00" in value:
            raise ValueError("a variable's value cannot contain a NUL character")
        if len(value.encode()) > MAX_VARIABLE_BYTES:
            raise ValueError(f"a variable's value is at most {MAX_VARIABLE_BYTES} bytes")
        return value

    @field_validator("targets")
    @classmethod
    def _distinct(cls, targets: list[BuildTarget]) -> list[BuildTarget]:
        return [target for target in BUILD_TARGETS if target in targets]


class VariableView(BaseModel):
    """A build variable; a secret's value is never shown (`value` is null)."""

    name: str
    value: str | None = Field(description="null for a secret")
    secret: bool
    targets: list[BuildTarget]
    updated_by: str | None = Field(description="who set it last (null: the admin API key)")
    updated_at: datetime


class VariableList(BaseModel):
    variables: list[VariableView]


# --- Caches -----------------------------------------------------------------------------------


class CacheView(BaseModel):
    """One cache of a project: dependency downloads, incremental build folders or a layer
    image (kept on each builder that built it)."""

    kind: CacheKind
    key: str
    size_bytes: int
    image: str = Field(description="the build image it was made with")
    branch: str | None = Field(description="the branch of the build that saved it")
    production: bool = Field(description="saved by a production build")
    build_id: str = Field(description="the build that saved it")
    created_at: datetime
    last_used_at: datetime


class CacheList(BaseModel):
    caches: list[CacheView] = Field(description="newest first")
    total_bytes: int
    hit_rate: float | None = Field(
        description="hits among the cache uses of the project's last builds (null: none yet)"
    )


class CachesCleared(BaseModel):
    """What `DELETE /api/projects/{id}/caches` removed."""

    removed: int = Field(description="how many caches were removed")
    freed_bytes: int = Field(
        description="bytes freed in storage (layer images go from each builder when it next "
        "builds an image)"
    )
