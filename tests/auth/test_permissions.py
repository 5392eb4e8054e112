"""Who may do what: project roles, the admin role and API key scopes (intersection)."""

from __future__ import annotations

import pytest

from gobuild.platform.auth.permissions import (
    Action,
    Principal,
    ProjectRole,
    Scope,
    admin_key_principal,
    allowed_actions,
    can_grant_scopes,
    is_allowed,
    parse_role,
    parse_scopes,
)

PROJECT = "p_site"
OTHER_PROJECT = "p_other"


def user(role: ProjectRole | None = None, *, is_admin: bool = False) -> Principal:
    roles = {PROJECT: role} if role else {}
    return Principal(kind="user", username="jane", is_admin=is_admin, project_roles=roles)


def api_key(role: ProjectRole | None, *scopes: Scope, is_admin: bool = False) -> Principal:
    roles = {PROJECT: role} if role else {}
    return Principal(
        kind="api_key",
        username="jane",
        is_admin=is_admin,
        project_roles=roles,
        scopes=frozenset(scopes),
        key_id="k1",
    )


READS = {Action.PROJECT_READ, Action.BUILD_READ}
MAINTAINER_WRITES = {
    Action.BUILD_CREATE,
    Action.BUILD_CANCEL,
    Action.DEPLOYMENT_REDEPLOY,
    Action.SHARE_CREATE,
}
OWNER_ONLY = {
    Action.PROJECT_UPDATE,
    Action.PROJECT_DELETE,
    Action.MEMBERS_MANAGE,
    Action.DEPLOYMENT_PROMOTE,
}
PROJECT_ACTIONS = READS | MAINTAINER_WRITES | OWNER_ONLY


def test_viewer_reads_but_cannot_build_cancel_or_manage() -> None:
    viewer = user(ProjectRole.VIEWER)
    assert {a for a in PROJECT_ACTIONS if is_allowed(viewer, a, PROJECT)} == READS
    assert not is_allowed(viewer, Action.BUILD_CREATE, PROJECT)


def test_maintainer_builds_cancels_redeploys_and_shares_but_does_not_manage() -> None:
    maintainer = user(ProjectRole.MAINTAINER)
    allowed = {a for a in PROJECT_ACTIONS if is_allowed(maintainer, a, PROJECT)}
    assert allowed == READS | MAINTAINER_WRITES
    assert not is_allowed(maintainer, Action.MEMBERS_MANAGE, PROJECT)
    assert not is_allowed(maintainer, Action.PROJECT_DELETE, PROJECT)


def test_owner_manages_members_updates_deletes_and_promotes() -> None:
    owner = user(ProjectRole.OWNER)
    assert {a for a in PROJECT_ACTIONS if is_allowed(owner, a, PROJECT)} == PROJECT_ACTIONS


def test_roles_apply_only_to_their_own_project() -> None:
    owner = user(ProjectRole.OWNER)
    assert not any(is_allowed(owner, a, OTHER_PROJECT) for a in PROJECT_ACTIONS)
    assert not is_allowed(owner, Action.BUILD_READ, None)


def test_admin_may_do_everything_everywhere() -> None:
    admin = user(is_admin=True)
    assert allowed_actions(admin, OTHER_PROJECT) == frozenset(Action)
    assert allowed_actions(admin_key_principal(), OTHER_PROJECT) == frozenset(Action)


def test_every_user_may_create_projects_and_manage_keys_but_only_admins_manage_users() -> None:
    nobody = user()
    assert is_allowed(nobody, Action.PROJECT_CREATE)
    assert is_allowed(nobody, Action.KEYS_MANAGE)
    assert not is_allowed(nobody, Action.USERS_MANAGE)
    assert is_allowed(user(is_admin=True), Action.USERS_MANAGE)


def test_api_key_is_limited_to_both_its_scopes_and_its_owners_role() -> None:
    read_only_key_of_owner = api_key(ProjectRole.OWNER, Scope.BUILDS_READ)
    assert is_allowed(read_only_key_of_owner, Action.BUILD_READ, PROJECT)
    assert not is_allowed(read_only_key_of_owner, Action.BUILD_CREATE, PROJECT)
    assert not is_allowed(read_only_key_of_owner, Action.MEMBERS_MANAGE, PROJECT)

    write_key_of_viewer = api_key(ProjectRole.VIEWER, Scope.BUILDS_WRITE)
    assert is_allowed(write_key_of_viewer, Action.BUILD_READ, PROJECT)
    assert not is_allowed(write_key_of_viewer, Action.BUILD_CREATE, PROJECT)

    write_key_of_maintainer = api_key(ProjectRole.MAINTAINER, Scope.BUILDS_WRITE)
    assert is_allowed(write_key_of_maintainer, Action.BUILD_CREATE, PROJECT)
    assert is_allowed(write_key_of_maintainer, Action.BUILD_CANCEL, PROJECT)
    assert not is_allowed(write_key_of_maintainer, Action.DEPLOYMENT_PROMOTE, PROJECT)


def test_scope_mapping_of_each_scope() -> None:
    owner_key = api_key(ProjectRole.OWNER, Scope.PROJECTS_ADMIN)
    assert is_allowed(owner_key, Action.MEMBERS_MANAGE, PROJECT)
    assert is_allowed(owner_key, Action.PROJECT_CREATE)
    assert not is_allowed(owner_key, Action.BUILD_READ, PROJECT)
    assert is_allowed(api_key(ProjectRole.OWNER, Scope.PROJECTS_READ), Action.PROJECT_READ, PROJECT)
    assert not is_allowed(api_key(None, Scope.BUILDS_READ), Action.KEYS_MANAGE)
    assert is_allowed(api_key(None, Scope.KEYS_ADMIN), Action.KEYS_MANAGE)


def test_admin_api_key_is_still_narrowed_by_its_scopes() -> None:
    admin_read_key = api_key(None, Scope.BUILDS_READ, is_admin=True)
    assert is_allowed(admin_read_key, Action.BUILD_READ, OTHER_PROJECT)
    assert not is_allowed(admin_read_key, Action.USERS_MANAGE)
    assert is_allowed(api_key(None, Scope.USERS_ADMIN, is_admin=True), Action.USERS_MANAGE)
    assert not is_allowed(api_key(None, Scope.USERS_ADMIN), Action.USERS_MANAGE)


def test_unknown_scopes_and_roles_are_rejected_with_the_valid_choices() -> None:
    with pytest.raises(ValueError, match=r"builds:delete.*builds:read"):
        parse_scopes(["builds:read", "builds:delete"])
    with pytest.raises(ValueError, match="at least one scope"):
        parse_scopes([])
    with pytest.raises(ValueError, match="owner, maintainer, viewer"):
        parse_role("superuser")
    assert parse_scopes(["builds:read"]) == {Scope.BUILDS_READ}


def test_keys_cannot_grant_more_than_they_hold_and_only_admins_grant_users_admin() -> None:
    assert can_grant_scopes(user(), [Scope.BUILDS_WRITE, Scope.KEYS_ADMIN])
    assert not can_grant_scopes(user(), [Scope.USERS_ADMIN])
    assert can_grant_scopes(user(is_admin=True), [Scope.USERS_ADMIN])
    key = api_key(None, Scope.BUILDS_READ, Scope.KEYS_ADMIN)
    assert can_grant_scopes(key, [Scope.BUILDS_READ])
    assert not can_grant_scopes(key, [Scope.BUILDS_WRITE])
