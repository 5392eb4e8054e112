"""What the caller may do: every route asks here, and here asks `permissions.is_allowed`.

Resources of a project the caller does not belong to answer exactly as if they did not
exist (the route's own 404), so ids and names cannot be probed. A member lacking the right
(a viewer cancelling, an API key without the scope) gets 403 saying why.
"""

from __future__ import annotations

from gobuild.platform.auth.permissions import Action, Principal, is_allowed, scopes_allow
from gobuild.platform.gateway.access import authentication_required, request_principal
from gobuild.platform.gateway.errors import ApiError


def current_principal() -> Principal:
    """The authenticated caller; 401 for anonymous requests."""
    principal = request_principal()
    if principal is None:
        raise authentication_required()
    return principal


def can_see_project(principal: Principal, project_id: str) -> bool:
    """Whether the project exists for this caller at all (admins see every project)."""
    return principal.is_admin or project_id in principal.project_roles


def may_in_project(principal: Principal, project_id: str, action: Action) -> bool:
    """Whether the caller may do `action` in the project (for lists that show only those)."""
    return can_see_project(principal, project_id) and is_allowed(principal, action, project_id)


def require_instance_admin(what: str) -> Principal:
    """The caller, if an instance admin (an admin's API key also needs a scope that reads
    builds); else 403 saying that `what` is for admins only."""
    principal = current_principal()
    if not principal.is_admin:
        raise ApiError(403, "forbidden", f"{what} is shown to instance admins only")
    if principal.scopes is not None and not scopes_allow(principal.scopes, Action.BUILD_READ):
        raise ApiError(403, "forbidden", why_not(principal, Action.BUILD_READ))
    return principal


def require(action: Action) -> Principal:
    """The caller, if they may do an instance-wide `action` (create projects, manage users)."""
    principal = current_principal()
    if not is_allowed(principal, action):
        raise ApiError(403, "forbidden", why_not(principal, action))
    return principal


def require_in_project(project_id: str, action: Action, not_found: ApiError) -> Principal:
    """The caller, if they may do `action` in the project; `not_found` if it is not theirs."""
    principal = current_principal()
    if not can_see_project(principal, project_id):
        raise not_found
    if not is_allowed(principal, action, project_id):
        raise ApiError(403, "forbidden", why_not(principal, action, project_id))
    return principal


def why_not(principal: Principal, action: Action, project_id: str | None = None) -> str:
    if principal.scopes is not None and not scopes_allow(principal.scopes, action):
        scopes = ", ".join(sorted(s.value for s in principal.scopes))
        return f"this API key's scopes ({scopes}) do not allow {action.value}"
    role = principal.project_roles.get(project_id) if project_id else None
    if role is not None:
        return f"the role {role.value!r} does not allow {action.value}"
    return f"{action.value} needs the admin role"
