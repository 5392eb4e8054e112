"""Notifications: a project's forge token (commit statuses), its outgoing webhooks and delivery
log, and which stages a user is e-mailed about. The notification service sends them."""

from __future__ import annotations

from quart import Blueprint
from quart.typing import ResponseReturnValue
from quart_schema import tag_blueprint, validate_querystring, validate_request, validate_response

from gobuild.platform.auth.permissions import Action
from gobuild.platform.gateway.authorization import current_principal, require
from gobuild.platform.gateway.context import gateway
from gobuild.platform.gateway.errors import ApiError
from gobuild.platform.gateway.notification_setup import (
    clear_forge_token,
    create_hook,
    set_forge_token,
)
from gobuild.platform.gateway.openapi import document_errors, document_raw_response
from gobuild.platform.gateway.routes.projects import find_project
from gobuild.platform.gateway.schemas import (
    DeliveryList,
    DeliveryListQuery,
    DeliveryView,
    ForgeTokenSet,
    HookCreate,
    HookCreated,
    HookList,
    HookView,
    NotificationPreferencesSet,
    NotificationPreferencesView,
)
from gobuild.platform.notification_records import Hook, NotificationPreferences
from gobuild.platform.stores.deliveries import DeliveryQueue
from gobuild.platform.stores.hooks import HookStore
from gobuild.platform.stores.notification_preferences import PreferenceStore

blueprint = Blueprint("notifications", __name__, url_prefix="/api")
tag_blueprint(blueprint, ["notifications"])

_NOT_A_USER = "the admin API key is no user; sign in as a user to choose notifications"


def hook_view(hook: Hook) -> HookView:
    return HookView(**hook.model_dump(exclude={"secret", "project_id"}))


@blueprint.put("/projects/<project_ref>/forge-token")
@validate_request(ForgeTokenSet)
@document_raw_response(204, "Kept (encrypted); commit statuses are sent with it from now on.")
async def put_forge_token(project_ref: str, data: ForgeTokenSet) -> ResponseReturnValue:
    """Set the token (and optionally the API URL) commit statuses go to GitHub / GitLab with.

    The token is write-only: the project shows `forge_token_set` only.
    """
    ctx = gateway()
    project = await find_project(ctx, project_ref, Action.PROJECT_UPDATE)
    await set_forge_token(ctx, project, data.token, data.forge_url)
    return "", 204


@blueprint.delete("/projects/<project_ref>/forge-token")
@document_raw_response(204, "Removed: no more commit statuses.")
async def delete_forge_token(project_ref: str) -> ResponseReturnValue:
    """Remove the forge token; commit statuses stop."""
    ctx = gateway()
    project = await find_project(ctx, project_ref, Action.PROJECT_UPDATE)
    await clear_forge_token(ctx, project)
    return "", 204


@blueprint.post("/projects/<project_ref>/hooks")
@validate_request(HookCreate)
@validate_response(HookCreated, 201)
@document_errors(409)
async def add_hook(project_ref: str, data: HookCreate) -> ResponseReturnValue:
    """Add an outgoing webhook: a signed JSON POST at each stage it subscribed to."""
    ctx = gateway()
    project = await find_project(ctx, project_ref, Action.HOOKS_MANAGE)
    principal = current_principal()
    hook, generated_secret = await create_hook(
        ctx,
        project,
        url=data.url,
        events=data.events,
        secret=data.secret,
        created_by=None if principal.kind == "admin_key" else principal.username,
    )
    return HookCreated(**hook_view(hook).model_dump(), secret=generated_secret), 201


@blueprint.get("/projects/<project_ref>/hooks")
@validate_response(HookList)
async def list_hooks(project_ref: str) -> ResponseReturnValue:
    """The project's outgoing webhooks, oldest first."""
    ctx = gateway()
    project = await find_project(ctx, project_ref, Action.HOOKS_MANAGE)
    return HookList(hooks=[hook_view(h) for h in await HookStore(ctx.redis).list(project.id)])


@blueprint.delete("/projects/<project_ref>/hooks/<hook_id>")
@document_raw_response(204, "Deleted: the hook gets nothing more, not even queued retries.")
async def delete_hook(project_ref: str, hook_id: str) -> ResponseReturnValue:
    """Delete an outgoing webhook."""
    ctx = gateway()
    project = await find_project(ctx, project_ref, Action.HOOKS_MANAGE)
    if not await HookStore(ctx.redis).delete(project.id, hook_id):
        raise ApiError(404, "hook not found", hook_id)
    return "", 204


@blueprint.get("/projects/<project_ref>/notifications")
@validate_querystring(DeliveryListQuery)
@validate_response(DeliveryList)
async def list_deliveries(project_ref: str, query_args: DeliveryListQuery) -> ResponseReturnValue:
    """The project's delivery log, newest first: each webhook, e-mail and commit status with
    its status, attempts and the receiver's last answer."""
    ctx = gateway()
    project = await find_project(ctx, project_ref, Action.HOOKS_MANAGE)
    deliveries = await DeliveryQueue(ctx.redis).log(project.id, query_args.limit)
    return DeliveryList(
        deliveries=[
            DeliveryView(
                **d.model_dump(exclude={"builds", "project_id", "ordering_key", "rank"}),
                build_ids=[b.build_id for b in d.builds],
            )
            for d in deliveries
        ]
    )


async def _preferences_view(
    username: str, preferences: NotificationPreferences
) -> NotificationPreferencesView:
    user = await gateway().auth.users.get(username)
    return NotificationPreferencesView(
        events=preferences.events,
        projects=preferences.projects,
        email=user.email if user else None,
        email_verified=bool(user and user.email_verified),
    )


@blueprint.get("/me/notifications")
@validate_response(NotificationPreferencesView)
async def get_preferences() -> ResponseReturnValue:
    """Which stages the caller is e-mailed about."""
    principal = require(Action.NOTIFICATION_PREFERENCES)
    if principal.kind == "admin_key":
        raise ApiError(403, "forbidden", _NOT_A_USER)
    preferences = await PreferenceStore(gateway().redis).get(principal.username)
    return await _preferences_view(principal.username, preferences)


@blueprint.put("/me/notifications")
@validate_request(NotificationPreferencesSet)
@validate_response(NotificationPreferencesView)
async def put_preferences(data: NotificationPreferencesSet) -> ResponseReturnValue:
    """Choose the stages (started, succeeded, failed, cancelled, deployed, promoted) the caller
    is e-mailed about, in every project they are a member of or only in `projects`."""
    principal = require(Action.NOTIFICATION_PREFERENCES)
    if principal.kind == "admin_key":
        raise ApiError(403, "forbidden", _NOT_A_USER)
    preferences = NotificationPreferences(events=data.events, projects=data.projects)
    await PreferenceStore(gateway().redis).set(principal.username, preferences)
    return await _preferences_view(principal.username, preferences)
