"""Setting up a project's notifications: the forge token for commit statuses and the outgoing
webhooks, their URLs checked against the address policy and their secrets kept encrypted."""

from __future__ import annotations

import secrets
from collections.abc import Callable

from redis.asyncio.client import Pipeline

from gobuild.platform.gateway.context import GatewayContext
from gobuild.platform.gateway.errors import ApiError
from gobuild.platform.notification_records import Hook, NotificationStage
from gobuild.platform.records import Project, new_id
from gobuild.platform.repo_credentials import NOTIFICATION_SECRETS_PURPOSE, SecretCipher
from gobuild.platform.repo_url import InvalidRepoUrl, check_public_url
from gobuild.platform.stores.hooks import HookStore, TooManyHooks
from gobuild.platform.stores.keys import key_project
from gobuild.platform.stores.optimistic import optimistic_update


async def admit_outgoing_url(ctx: GatewayContext, url: str, field: str) -> None:
    """422 unless the URL may receive requests: not on an internal network (by its address or
    any address its name resolves to now; it is checked again before every request) unless
    GOBUILD_HOOKS_ALLOW_PRIVATE_ADDRESSES is on."""
    if ctx.settings.hooks_allow_private_addresses:
        return
    try:
        await check_public_url(url, must_resolve=False)
    except InvalidRepoUrl as exc:
        raise ApiError(422, f"{field} refused", str(exc)) from None


async def _cipher(ctx: GatewayContext) -> SecretCipher:
    return await SecretCipher.load(ctx.redis, ctx.settings, NOTIFICATION_SECRETS_PURPOSE)


async def set_forge_token(
    ctx: GatewayContext, project: Project, token: str, forge_url: str | None
) -> None:
    """Keep the project's forge token (encrypted) and API URL."""
    if project.provider not in ("github", "gitlab"):
        raise ApiError(
            422,
            "no commit statuses for this provider",
            "commit statuses are sent to GitHub or GitLab: the project's provider is "
            f"{project.provider!r}",
        )
    if forge_url is not None:
        await admit_outgoing_url(ctx, forge_url, "forge_url")
    encrypted = (await _cipher(ctx)).encrypt(token)
    await _update_project(
        ctx,
        project.id,
        lambda p: p.model_copy(update={"forge_token": encrypted, "forge_url": forge_url}),
    )


async def clear_forge_token(ctx: GatewayContext, project: Project) -> None:
    await _update_project(
        ctx, project.id, lambda p: p.model_copy(update={"forge_token": None, "forge_url": None})
    )


async def _update_project(
    ctx: GatewayContext, project_id: str, change: Callable[[Project], Project]
) -> None:
    key = key_project(project_id)

    async def transaction(pipe: Pipeline) -> None:
        raw = await pipe.get(key)
        if raw is None:
            raise ApiError(404, "project not found", project_id)
        pipe.multi()
        pipe.set(key, change(Project.model_validate_json(raw)).model_dump_json())

    await optimistic_update(ctx.redis, [key], transaction, what=f"project {project_id}")


async def create_hook(
    ctx: GatewayContext,
    project: Project,
    *,
    url: str,
    events: list[NotificationStage],
    secret: str | None,
    created_by: str | None,
) -> tuple[Hook, str | None]:
    """The new hook, and its secret when one was generated (to be shown once)."""
    await admit_outgoing_url(ctx, url, "url")
    plain = secret or secrets.token_urlsafe(32)
    hook = Hook(
        id=new_id("h_"),
        project_id=project.id,
        url=url,
        events=events,
        secret=(await _cipher(ctx)).encrypt(plain),
        created_by=created_by,
    )
    try:
        await HookStore(ctx.redis).add(hook)
    except TooManyHooks as exc:
        raise ApiError(409, "too many hooks", str(exc)) from None
    return hook, None if secret else plain
