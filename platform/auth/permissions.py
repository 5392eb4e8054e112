"""The one place permissions are defined: roles, actions, API key scopes and `is_allowed`.

A user's project role (or the instance role `admin`) says what they may do; an API key can
only narrow that down with its scopes, never widen it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Literal


class InstanceRole(StrEnum):
    ADMIN = "admin"


class ProjectRole(StrEnum):
    OWNER = "owner"
    MAINTAINER = "maintainer"
    VIEWER = "viewer"


class Action(StrEnum):
    # Project-scoped: checked against the principal's role in that project.
    PROJECT_READ = "project.read"
    PROJECT_UPDATE = "project.update"
    PROJECT_DELETE = "project.delete"
    MEMBERS_MANAGE = "members.manage"
    BUILD_READ = "build.read"  # builds, logs, artifacts, deployments
    BUILD_CREATE = "build.create"
    BUILD_CANCEL = "build.cancel"
    DEPLOYMENT_REDEPLOY = "deployment.redeploy"
    DEPLOYMENT_PROMOTE = "deployment.promote"
    SHARE_CREATE = "share.create"
    # Outgoing webhooks of the project and its delivery log.
    HOOKS_MANAGE = "hooks.manage"
    # Removing the project's dependency, incremental and layer caches.
    CACHES_CLEAR = "caches.clear"
    # The project's build variables: reading them (names, plain values, who set a secret) and
    # setting or deleting them. A secret's value is never shown to anyone.
    ENV_READ = "env.read"
    ENV_MANAGE = "env.manage"
    # Instance-scoped (no project): creating projects, managing one's own API keys, users.
    PROJECT_CREATE = "project.create"
    KEYS_MANAGE = "keys.manage"
    USERS_MANAGE = "users.manage"
    # Which notifications one gets by e-mail (signed-in users, for themselves).
    NOTIFICATION_PREFERENCES = "notifications.preferences"
    # Running retention now and reading its reports (instance admins only).
    RETENTION_MANAGE = "retention.manage"


class Scope(StrEnum):
    BUILDS_READ = "builds:read"
    BUILDS_WRITE = "builds:write"
    PROJECTS_READ = "projects:read"
    PROJECTS_ADMIN = "projects:admin"
    USERS_ADMIN = "users:admin"
    KEYS_ADMIN = "keys:admin"


_VIEWER = frozenset({Action.PROJECT_READ, Action.BUILD_READ})
_MAINTAINER = _VIEWER | {
    Action.BUILD_CREATE,
    Action.BUILD_CANCEL,
    Action.DEPLOYMENT_REDEPLOY,
    Action.SHARE_CREATE,
    Action.HOOKS_MANAGE,
    Action.ENV_READ,
    Action.CACHES_CLEAR,
}
# What reaches production deployments (build settings, variables) is the owners' to change.
_OWNER = _MAINTAINER | {
    Action.PROJECT_UPDATE,
    Action.ENV_MANAGE,
    Action.PROJECT_DELETE,
    Action.MEMBERS_MANAGE,
    Action.DEPLOYMENT_PROMOTE,
}

ROLE_ACTIONS: Mapping[ProjectRole, frozenset[Action]] = {
    ProjectRole.VIEWER: _VIEWER,
    ProjectRole.MAINTAINER: frozenset(_MAINTAINER),
    ProjectRole.OWNER: frozenset(_OWNER),
}

# Actions that need no project: what every signed-in user may do, and what only admins may.
INSTANCE_ACTIONS = frozenset(
    {
        Action.PROJECT_CREATE,
        Action.KEYS_MANAGE,
        Action.USERS_MANAGE,
        Action.NOTIFICATION_PREFERENCES,
        Action.RETENTION_MANAGE,
    }
)
USER_INSTANCE_ACTIONS = frozenset(
    {Action.PROJECT_CREATE, Action.KEYS_MANAGE, Action.NOTIFICATION_PREFERENCES}
)

_BUILDS_READ = frozenset({Action.PROJECT_READ, Action.BUILD_READ})
SCOPE_ACTIONS: Mapping[Scope, frozenset[Action]] = {
    Scope.BUILDS_READ: _BUILDS_READ,
    # Writing builds implies reading them.
    Scope.BUILDS_WRITE: _BUILDS_READ
    | {
        Action.BUILD_CREATE,
        Action.BUILD_CANCEL,
        Action.DEPLOYMENT_REDEPLOY,
        Action.DEPLOYMENT_PROMOTE,
        Action.SHARE_CREATE,
        Action.CACHES_CLEAR,
    },
    Scope.PROJECTS_READ: frozenset({Action.PROJECT_READ}),
    Scope.PROJECTS_ADMIN: frozenset(
        {
            Action.PROJECT_READ,
            Action.PROJECT_CREATE,
            Action.PROJECT_UPDATE,
            Action.PROJECT_DELETE,
            Action.MEMBERS_MANAGE,
            Action.HOOKS_MANAGE,
            Action.ENV_READ,
            Action.ENV_MANAGE,
            Action.CACHES_CLEAR,
        }
    ),
    Scope.USERS_ADMIN: frozenset({Action.USERS_MANAGE}),
    Scope.KEYS_ADMIN: frozenset({Action.KEYS_MANAGE}),
}

PrincipalKind = Literal["user", "api_key", "admin_key"]


@dataclass(frozen=True)
class Principal:
    """Who is making a request, as resolved from a token, an API key or the admin key."""

    kind: PrincipalKind
    username: str
    is_admin: bool = False
    project_roles: Mapping[str, ProjectRole] = field(default_factory=dict)
    # None: not restricted by scopes (user sessions, the admin key).
    scopes: frozenset[Scope] | None = None
    key_id: str | None = None
    # The access token this principal came from (to revoke it on logout).
    jti: str | None = None
    token_expires_at: int | None = None

    @property
    def instance_roles(self) -> list[str]:
        return [InstanceRole.ADMIN.value] if self.is_admin else []


# Not a valid username, so it never names a user.
ADMIN_KEY_USERNAME = "@admin-key"


def admin_key_principal() -> Principal:
    """The principal of a request made with the instance's admin API key."""
    return Principal(kind="admin_key", username=ADMIN_KEY_USERNAME, is_admin=True)


def parse_role(value: str) -> ProjectRole:
    try:
        return ProjectRole(value)
    except ValueError:
        allowed = ", ".join(r.value for r in ProjectRole)
        raise ValueError(f"unknown project role {value!r}; use one of: {allowed}") from None


def parse_scopes(values: Iterable[str]) -> frozenset[Scope]:
    """Validate API key scopes; raises ValueError naming the unknown ones."""
    values = list(values)
    unknown = sorted({v for v in values if v not in Scope._value2member_map_})
    if unknown:
        allowed = ", ".join(s.value for s in Scope)
        raise ValueError(f"unknown scope(s) {', '.join(unknown)}; use: {allowed}")
    if not values:
        raise ValueError("an API key needs at least one scope")
    return frozenset(Scope(v) for v in values)


def role_allows(role: ProjectRole | None, action: Action) -> bool:
    return role is not None and action in ROLE_ACTIONS[role]


def scopes_allow(scopes: Iterable[Scope], action: Action) -> bool:
    return any(action in SCOPE_ACTIONS[scope] for scope in scopes)


def is_allowed(principal: Principal, action: Action, project_id: str | None = None) -> bool:
    """Whether `principal` may do `action` (on `project_id` for project-scoped actions).

    The user's role decides; an API key's scopes must also allow the action (intersection).
    """
    if principal.scopes is not None and not scopes_allow(principal.scopes, action):
        return False
    if principal.is_admin:
        return True
    if action in INSTANCE_ACTIONS:
        return action in USER_INSTANCE_ACTIONS
    if project_id is None:
        return False
    return role_allows(principal.project_roles.get(project_id), action)


def allowed_actions(principal: Principal, project_id: str | None = None) -> frozenset[Action]:
    """Everything `principal` may do on a project (for the UI to show or hide buttons)."""
    return frozenset(a for a in Action if is_allowed(principal, a, project_id))


def can_grant_scopes(principal: Principal, scopes: Iterable[Scope]) -> bool:
    """Whether `principal` may create an API key with `scopes` (no escalation).

    A key can only hand out scopes it has itself; only admins may grant `users:admin`.
    """
    wanted = frozenset(scopes)
    if principal.scopes is not None and not wanted <= principal.scopes:
        return False
    return principal.is_admin or Scope.USERS_ADMIN not in wanted
