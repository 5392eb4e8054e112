"""Every Redis key GoBuild uses, in one module, grouped by concern.

All keys live under `gobuild:`. Ids are generated and usernames match
`^[a-z0-9][a-z0-9_.-]{0,38}$`, so neither contains `:`. Secrets never appear in key names:
tokens and codes are keyed by their SHA-256.
"""

from __future__ import annotations

PREFIX = "gobuild:"

# --- Projects, builds, deployments (gateway, orchestrator, builders) -------------------------

KEY_PROJECTS = PREFIX + "projects"
KEY_PENDING_TRIGGERS = PREFIX + "triggers:pending"
# Key that encrypts the credentials of repository URLs when GOBUILD_SECRET_KEY is empty.
KEY_SECRET_KEY = PREFIX + "secret-key"
# Sorted set: id of every build that is not finished -> when it was last known to be attended
# (recorded, moved, seen held by a live builder, re-queued). The orchestrator reconciles these.
KEY_ACTIVE_BUILDS = PREFIX + "builds:active"
# Set of the build ids with a builder's result in the outbox (`key_build_outbox`).
KEY_RESULT_OUTBOX = PREFIX + "builds:outbox"
# Sorted set: builder id -> unix time of its last heartbeat (the heartbeats, found without SCAN).
KEY_BUILDERS = PREFIX + "builders"
# The scheduler's queue (platform.stores.build_queue). Sorted set: id of each build waiting for
# a builder -> its rank score (when it was queued, earlier for production builds).
KEY_BUILD_QUEUE = PREFIX + "queue"
# Hash: waiting build id -> its `QueueEntry` as JSON (position, reason, estimated start),
# written by the scheduler after each round, read by the API.
KEY_QUEUE_SNAPSHOT = PREFIX + "queue:snapshot"
# Hash: build id -> its `Assignment` as JSON (the builder it was given to, attempt, when).
KEY_BUILD_ASSIGNMENTS = PREFIX + "queue:assignments"
# Hash: queued build id -> its `QueueTicket` as JSON (when it was queued, which attempt).
KEY_QUEUE_TICKETS = PREFIX + "queue:tickets"
CHANNEL_CANCEL = PREFIX + "cancel"
# Pub/sub: the id of each build whose result a builder just put in the outbox (its slot is
# free: the scheduler runs a round).
CHANNEL_RESULTS = PREFIX + "results"


def key_builder_assigned(builder_id: str) -> str:
    """Set: ids of the builds the scheduler gave this builder that have not ended."""
    return f"{PREFIX}builder:{builder_id}:assigned"


def key_project(project_id: str) -> str:
    return f"{PREFIX}project:{project_id}"


def key_project_by_name(name: str) -> str:
    return f"{PREFIX}project-name:{name}"


def key_project_by_repo(repo_key: str) -> str:
    return f"{PREFIX}project-repo:{repo_key}"


def key_project_variables(project_id: str) -> str:
    """Hash: variable name -> the `BuildVariable` record as JSON (a secret's value encrypted)."""
    return f"{PREFIX}project:{project_id}:variables"


def key_project_builds(project_id: str) -> str:
    return f"{PREFIX}project:{project_id}:builds"


def key_project_build_seq(project_id: str) -> str:
    return f"{PREFIX}project:{project_id}:build-seq"


def key_production_alias(project_id: str) -> str:
    return f"{PREFIX}project:{project_id}:production"


def key_production_head(project_id: str) -> str:
    """String (a `ProductionAlias`), only while the alias is pinned: the newest production
    deployment, which the alias serves again when it is un-pinned."""
    return f"{PREFIX}project:{project_id}:production-head"


def key_project_deployments(project_id: str) -> str:
    """Sorted set: deployment id -> its build number."""
    return f"{PREFIX}project:{project_id}:deployments"


def key_build(build_id: str) -> str:
    return f"{PREFIX}build:{build_id}"


def key_build_resource_samples(build_id: str) -> str:
    """List, capped and expiring: the build's resource samples (JSON), oldest first."""
    return f"{PREFIX}build:{build_id}:resources"


def key_trigger(build_id: str) -> str:
    return f"{PREFIX}trigger:{build_id}"


def key_cancel_requested(build_id: str) -> str:
    """String: "1", or the reason the canceller gave (a newer push superseded the build)."""
    return f"{PREFIX}build:{build_id}:cancel"


def key_build_event_order(build_id: str) -> str:
    """String `attempt:seq`: the newest numbered builder event applied to the build's record
    (`BuildStatusChanged.seq`); an older one is late and cannot move the state back."""
    return f"{PREFIX}build:{build_id}:event-order"


def key_build_claim(build_id: str) -> str:
    return f"{PREFIX}build:{build_id}:claim"


def key_deployment(deployment_id: str) -> str:
    return f"{PREFIX}deployment:{deployment_id}"


def key_delivery(provider: str, delivery_id: str) -> str:
    return f"{PREFIX}delivery:{provider}:{delivery_id}"


def key_delivery_body(provider: str, body_sha256: str) -> str:
    """String: the build ids of a delivery that came without a delivery id, keyed by the
    SHA-256 of its raw body; expires with the dedupe window."""
    return f"{PREFIX}delivery-body:{provider}:{body_sha256}"


def key_builder_heartbeat(builder_id: str) -> str:
    return f"{PREFIX}builder:{builder_id}"


def key_build_attempts(build_id: str) -> str:
    """Counter of the attempts builders made at one build."""
    return f"{PREFIX}build:{build_id}:attempts"


def key_build_requeues(build_id: str) -> str:
    """Counter of the times the orchestrator re-published a build's request after it was lost."""
    return f"{PREFIX}build:{build_id}:requeues"


def key_build_outbox(build_id: str) -> str:
    """String: a builder's terminal result (JSON `PendingResult`) until the orchestrator applied
    it to the build record."""
    return f"{PREFIX}build:{build_id}:outbox"


def key_previous_webhook_secret(project_id: str) -> str:
    """String: the project's previous webhook secret; expires when its grace period ends."""
    return f"{PREFIX}gateway:webhook-secret-previous:{project_id}"


# --- Identity and access (the auth package) ----------------------------------------------------

AUTH_PREFIX = PREFIX + "auth:"

# Signing secret of access tokens and share links when GOBUILD_JWT_SECRET is empty.
KEY_JWT_SECRET = AUTH_PREFIX + "jwt-secret"
# Sorted set: username -> created_at timestamp.
KEY_USERS = AUTH_PREFIX + "users"
# Set of usernames with the instance role `admin`.
KEY_ADMINS = AUTH_PREFIX + "admins"


def key_user(username: str) -> str:
    """String: the `User` record as JSON."""
    return f"{AUTH_PREFIX}user:{username}"


def key_user_by_email(email: str) -> str:
    """String: username owning this verified email (lowercase)."""
    return f"{AUTH_PREFIX}user-email:{email}"


def key_identity(provider: str, provider_user_id: str) -> str:
    """String: username linked to an OAuth identity."""
    return f"{AUTH_PREFIX}identity:{provider}:{provider_user_id}"


def key_user_identities(username: str) -> str:
    """Set of `provider:provider_user_id` linked to a user."""
    return f"{AUTH_PREFIX}user:{username}:identities"


def key_project_members(project_id: str) -> str:
    """Hash: username -> project role."""
    return f"{AUTH_PREFIX}project:{project_id}:members"


def key_user_projects(username: str) -> str:
    """Hash: project id -> project role (the mirror of `key_project_members`)."""
    return f"{AUTH_PREFIX}user:{username}:projects"


def key_api_key(key_id: str) -> str:
    """Hash: `record` (ApiKey JSON) and `last_used_at` (ISO time)."""
    return f"{AUTH_PREFIX}api-key:{key_id}"


def key_user_api_keys(username: str) -> str:
    """Set of API key ids owned by a user."""
    return f"{AUTH_PREFIX}user:{username}:api-keys"


REFRESH_TOKEN_PREFIX = AUTH_PREFIX + "refresh:"
REFRESH_FAMILY_PREFIX = AUTH_PREFIX + "refresh-family:"


def key_refresh_token(token_hash: str) -> str:
    """Hash: family, username, used (0/1), expires_at (unix seconds); expires with the token."""
    return REFRESH_TOKEN_PREFIX + token_hash


def key_refresh_family(family_id: str) -> str:
    """Hash: username, revoked (0/1), created_at."""
    return REFRESH_FAMILY_PREFIX + family_id


def key_refresh_family_tokens(family_id: str) -> str:
    """Set of the token hashes issued in a family."""
    return REFRESH_FAMILY_PREFIX + family_id + ":tokens"


def key_user_refresh_families(username: str) -> str:
    """Set of a user's refresh token family ids."""
    return f"{AUTH_PREFIX}user:{username}:refresh-families"


def key_revoked_access_token(jti: str) -> str:
    """String, expiring with the access token: present means the token was revoked."""
    return f"{AUTH_PREFIX}revoked-jti:{jti}"


REVOKED_FAMILY_PREFIX = AUTH_PREFIX + "revoked-family:"


def key_revoked_refresh_family(family_id: str) -> str:
    """String, expiring after the longest access token lifetime: present means the access
    tokens issued with this refresh family's login are refused."""
    return REVOKED_FAMILY_PREFIX + family_id


def key_rate_limit(bucket: str, key: str) -> str:
    """Sorted set of hit timestamps (ms) in the sliding window."""
    return f"{AUTH_PREFIX}ratelimit:{bucket}:{key}"


def key_login_failures(account: str) -> str:
    """Counter of failed logins within the failure window."""
    return f"{AUTH_PREFIX}login-failures:{account}"


def key_login_lock(account: str) -> str:
    """String, expiring when the lock ends: present means the account is locked."""
    return f"{AUTH_PREFIX}login-lock:{account}"


def key_login_lock_level(account: str) -> str:
    """Counter of consecutive lockouts (each doubles the lock)."""
    return f"{AUTH_PREFIX}login-lock-level:{account}"


def key_oauth_state(state: str) -> str:
    """String (JSON: provider, code_verifier, redirect_uri), 10 minutes, single use."""
    return f"{AUTH_PREFIX}oauth-state:{state}"


def key_login_code(code_hash: str) -> str:
    """String: username a one-time login code signs in as (60 s, single use)."""
    return f"{AUTH_PREFIX}login-code:{code_hash}"


def key_browser_session(session_hash: str) -> str:
    """String: username of a browser (cookie) session; expires with the session."""
    return f"{AUTH_PREFIX}browser-session:{session_hash}"


def key_share_link(link_id: str) -> str:
    """String: the `ShareLink` record as JSON; expires with the link, deleted on revoke."""
    return f"{AUTH_PREFIX}share:{link_id}"


def key_build_share_links(build_id: str) -> str:
    """Set of share link ids of a build."""
    return f"{AUTH_PREFIX}build:{build_id}:shares"


def key_project_share_links(project_id: str) -> str:
    """Sorted set: share link id -> its expiry (unix seconds), of a project's builds."""
    return f"{AUTH_PREFIX}project:{project_id}:shares"


# --- Notifications (commit statuses, outgoing webhooks, e-mail) --------------------------------

NOTIFY_PREFIX = PREFIX + "notify:"

# Sorted set: delivery id -> when it is due (unix seconds); a claimed delivery is pushed out by
# its lease, so one whose worker died is taken up again.
KEY_NOTIFICATION_QUEUE = NOTIFY_PREFIX + "queue"


def key_notification_delivery(delivery_id: str) -> str:
    """String: the `Delivery` record as JSON; expires a while after it was delivered or given up."""
    return f"{NOTIFY_PREFIX}delivery:{delivery_id}"


def key_project_notification_log(project_id: str) -> str:
    """Sorted set: delivery id -> created at (unix seconds), the newest kept (the delivery log)."""
    return f"{NOTIFY_PREFIX}project:{project_id}:deliveries"


def key_project_hooks(project_id: str) -> str:
    """Hash: hook id -> the `Hook` record as JSON (its secret encrypted)."""
    return f"{NOTIFY_PREFIX}project:{project_id}:hooks"


def key_notification_preferences(username: str) -> str:
    """String: the user's `NotificationPreferences` as JSON (which stages they get by e-mail)."""
    return f"{NOTIFY_PREFIX}preferences:{username}"


def key_notified_event(event_id: str) -> str:
    """String, expiring: present means the event was handled (a redelivery is skipped)."""
    return f"{NOTIFY_PREFIX}event:{event_id}"


def key_notification_sent(build_id: str, stage: str, receiver: str) -> str:
    """String, expiring: present means `receiver` was given `stage` of the build (each once)."""
    return f"{NOTIFY_PREFIX}sent:{build_id}:{stage}:{receiver}"


def key_notification_batch(project_id: str, receiver: str, stage: str) -> str:
    """String, expiring with the coalescing window: the delivery that more builds reaching the
    same stage for the same receiver join."""
    return f"{NOTIFY_PREFIX}batch:{project_id}:{receiver}:{stage}"


def key_notification_order(ordering_key: str) -> str:
    """String: the rank of the newest commit status queued for one build and forge; an older
    one still waiting is superseded."""
    return f"{NOTIFY_PREFIX}order:{ordering_key}"


def key_notification_sending(ordering_key: str) -> str:
    """String, expiring: a commit status of this build and forge is being sent (in order)."""
    return f"{NOTIFY_PREFIX}sending:{ordering_key}"


def key_build_notes(build_id: str) -> str:
    """Hash: what the notification service learnt of a build from its events (step, commit)."""
    return f"{NOTIFY_PREFIX}build:{build_id}"


def key_build_error_lines(build_id: str) -> str:
    """List, expiring: the first error lines of the build's log (the excerpt alerts quote)."""
    return f"{NOTIFY_PREFIX}build:{build_id}:errors"


# --- Retention (the retention job and the gateway's retention routes) --------------------------

RETENTION_PREFIX = PREFIX + "retention:"

# String: the token of the retention run holding the lock; expires unless its holder renews it.
KEY_RETENTION_LOCK = RETENTION_PREFIX + "lock"
# Hash: the run working through the plan (`run`: its `RetentionRun` JSON; `cursor`: the index of
# the next planned removal). Present only while a run is unfinished, so a crashed run is resumed.
KEY_RETENTION_RUN = RETENTION_PREFIX + "run"
# List: the planned removals (`PlannedRemoval` JSON) of the unfinished run, in order.
KEY_RETENTION_PLAN = RETENTION_PREFIX + "plan"
# List: what became of each planned removal done so far (`RemovalOutcome` JSON).
KEY_RETENTION_OUTCOMES = RETENTION_PREFIX + "outcomes"
# List: the reports of past runs (`RetentionReport` JSON), newest first, the newest kept.
KEY_RETENTION_REPORTS = RETENTION_PREFIX + "reports"


def key_retention_policy(project_id: str) -> str:
    """String: the project's `RetentionOverrides` as JSON (absent: the instance defaults)."""
    return f"{RETENTION_PREFIX}project:{project_id}:policy"


def key_retention_logs_gone(project_id: str) -> str:
    """Set of the project's build ids whose log retention removed or found absent (storage is
    not asked about them again)."""
    return f"{RETENTION_PREFIX}project:{project_id}:logs-gone"


# --- Caches (builders record and use them, the gateway shows and clears them) ------------------

CACHE_PREFIX = PREFIX + "cache:"


def key_project_caches(project_id: str) -> str:
    """Hash: `<kind>/<key>` -> the `CacheEntry` as JSON, every cache the project has."""
    return f"{CACHE_PREFIX}project:{project_id}"


def key_cache_save_lease(project_id: str, kind: str, cache_key: str) -> str:
    """String, expiring: the token of the build saving this cache now (another one skips)."""
    return f"{CACHE_PREFIX}saving:{project_id}:{kind}:{cache_key}"
