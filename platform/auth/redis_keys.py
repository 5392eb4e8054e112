"""Every Redis key of the auth package, all under `gobuild:auth:`.

Usernames match `^[a-z0-9][a-z0-9_.-]{0,38}$` and ids are generated, so neither contains `:`.
Secrets never appear in key names: tokens and codes are keyed by their SHA-256.
"""

from __future__ import annotations

PREFIX = "gobuild:auth:"

# Signing secret of access tokens and share links when GOBUILD_JWT_SECRET is empty.
KEY_JWT_SECRET = PREFIX + "jwt-secret"
# Sorted set: username -> created_at timestamp.
KEY_USERS = PREFIX + "users"
# Set of usernames with the instance role `admin`.
KEY_ADMINS = PREFIX + "admins"


def key_user(username: str) -> str:
    """String: the `User` record as JSON."""
    return f"{PREFIX}user:{username}"


def key_user_by_email(email: str) -> str:
    """String: username owning this verified email (lowercase)."""
    return f"{PREFIX}user-email:{email}"


def key_identity(provider: str, provider_user_id: str) -> str:
    """String: username linked to an OAuth identity."""
    return f"{PREFIX}identity:{provider}:{provider_user_id}"


def key_user_identities(username: str) -> str:
    """Set of `provider:provider_user_id` linked to a user."""
    return f"{PREFIX}user:{username}:identities"


def key_project_members(project_id: str) -> str:
    """Hash: username -> project role."""
    return f"{PREFIX}project:{project_id}:members"


def key_user_projects(username: str) -> str:
    """Hash: project id -> project role (the mirror of `key_project_members`)."""
    return f"{PREFIX}user:{username}:projects"


def key_api_key(key_id: str) -> str:
    """Hash: `record` (ApiKey JSON) and `last_used_at` (ISO time)."""
    return f"{PREFIX}api-key:{key_id}"


def key_user_api_keys(username: str) -> str:
    """Set of API key ids owned by a user."""
    return f"{PREFIX}user:{username}:api-keys"


REFRESH_TOKEN_PREFIX = PREFIX + "refresh:"
REFRESH_FAMILY_PREFIX = PREFIX + "refresh-family:"


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
    return f"{PREFIX}user:{username}:refresh-families"


def key_revoked_access_token(jti: str) -> str:
    """String, expiring with the access token: present means the token was revoked."""
    return f"{PREFIX}revoked-jti:{jti}"


def key_rate_limit(bucket: str, key: str) -> str:
    """Sorted set of hit timestamps (ms) in the sliding window."""
    return f"{PREFIX}ratelimit:{bucket}:{key}"


def key_login_failures(account: str) -> str:
    """Counter of failed logins within the failure window."""
    return f"{PREFIX}login-failures:{account}"


def key_login_lock(account: str) -> str:
    """String, expiring when the lock ends: present means the account is locked."""
    return f"{PREFIX}login-lock:{account}"


def key_login_lock_level(account: str) -> str:
    """Counter of consecutive lockouts (each doubles the lock)."""
    return f"{PREFIX}login-lock-level:{account}"


def key_oauth_state(state: str) -> str:
    """String (JSON: provider, code_verifier, redirect_uri), 10 minutes, single use."""
    return f"{PREFIX}oauth-state:{state}"


def key_login_code(code_hash: str) -> str:
    """String: username a one-time login code signs in as (60 s, single use)."""
    return f"{PREFIX}login-code:{code_hash}"


def key_browser_session(session_hash: str) -> str:
    """String: username of a browser (cookie) session; expires with the session."""
    return f"{PREFIX}browser-session:{session_hash}"


def key_share_link(link_id: str) -> str:
    """String: the `ShareLink` record as JSON; expires with the link, deleted on revoke."""
    return f"{PREFIX}share:{link_id}"


def key_build_share_links(build_id: str) -> str:
    """Set of share link ids of a build."""
    return f"{PREFIX}build:{build_id}:shares"
