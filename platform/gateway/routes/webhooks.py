"""`POST /webhooks/github` and `POST /webhooks/gitlab`: one URL serves every project.

The project is found from the repository named in the payload; the delivery is accepted only
if it is signed with that project's secret. Redeliveries (same delivery id, or the same body
when the delivery has no id) create no build.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from typing import Any, TypeVar

from quart import Blueprint, request
from quart.typing import ResponseReturnValue
from quart_schema import document_headers, document_request, document_response, tag_blueprint

from gobuild.platform.gateway.context import GatewayContext, gateway
from gobuild.platform.gateway.errors import ApiError
from gobuild.platform.gateway.openapi import document_errors, public
from gobuild.platform.gateway.schemas import (
    GitHubDeliveryHeaders,
    GitLabDeliveryHeaders,
    WebhookAccepted,
    WebhookHandled,
    WebhookPayload,
)
from gobuild.platform.gateway.triggers import TriggerRequest, enqueue_builds
from gobuild.platform.gateway.webhook_secrets import accepted_secrets
from gobuild.platform.records import Project
from gobuild.platform.stores.keys import key_delivery, key_delivery_body
from gobuild.webhooks import (
    WebhookEvent,
    github_body_json,
    parse_github_delivery,
    parse_gitlab_delivery,
    verify_github_signature,
    verify_gitlab_token,
)

log = logging.getLogger(__name__)
Handler = TypeVar("Handler", bound=Callable[..., Any])
blueprint = Blueprint("webhooks", __name__, url_prefix="/webhooks")
tag_blueprint(blueprint, ["webhooks"])


async def _raw_body(ctx: GatewayContext) -> bytes:
    length = request.content_length
    if length is not None and length > ctx.settings.max_body_bytes:
        raise ApiError(
            413, "request body too large", f"limit is {ctx.settings.max_body_bytes} bytes"
        )
    return await request.get_data(cache=False, as_text=False)


async def _projects_for(ctx: GatewayContext, event: WebhookEvent) -> list[Project]:
    projects = await ctx.projects.find_by_repo(event.repo_urls)
    if not projects:
        shown = event.repo_full_name or (event.repo_urls[0] if event.repo_urls else "?")
        raise ApiError(404, "no project is registered for this repository", shown)
    return projects


def _delivery_key(event: WebhookEvent, body: bytes) -> tuple[str, str]:
    """The key marking a delivery as received, and how an answer names the delivery: by its
    delivery id, or by the SHA-256 of its raw body when the provider sent no id."""
    if event.delivery_id:
        return key_delivery(event.provider, event.delivery_id), f"delivery {event.delivery_id}"
    digest = hashlib.sha256(body).hexdigest()
    return key_delivery_body(event.provider, digest), f"a delivery with body sha256 {digest}"


async def _accept(
    ctx: GatewayContext, event: WebhookEvent, projects: list[Project], body: bytes
) -> ResponseReturnValue:
    """Common rules for both providers once the signature has been checked."""
    if event.kind == "ping":
        return {"ok": True, "event": "ping", "project_ids": [p.id for p in projects]}, 200
    if event.deleted:
        return {"skipped": f"{event.ref} was deleted; nothing to build"}, 200
    if event.is_tag:
        projects = [p for p in projects if p.build_tags]
        if not projects:
            return {"skipped": f"tag {event.tag}: the project does not build tags"}, 200

    delivery_key, delivery_name = _delivery_key(event, body)
    if not await ctx.redis.set(delivery_key, "[]", nx=True, ex=ctx.settings.webhook_dedupe_seconds):
        earlier = json.loads(await ctx.redis.get(delivery_key) or "[]")
        return {
            "duplicate": True,
            "detail": f"{delivery_name} was received before",
            "build_id": earlier[0] if earlier else None,
            "build_ids": earlier,
        }, 200

    trigger = TriggerRequest(
        source=event.provider,
        ref=event.ref or "",
        branch=event.branch,
        tag=event.tag,
        commit_sha=event.commit_sha,
        commit_message=event.commit_message,
        author=event.author,
        delivery_id=event.delivery_id,
    )
    try:
        builds = await enqueue_builds(ctx, projects, trigger)
    except Exception:
        # Not accepted: a redelivery must be able to try again.
        await ctx.redis.delete(delivery_key)
        raise
    build_ids = [b.id for b in builds]
    await ctx.redis.set(delivery_key, json.dumps(build_ids), ex=ctx.settings.webhook_dedupe_seconds)
    base = ctx.settings.gateway_public_url
    return {
        "build_id": build_ids[0],
        "build_ids": build_ids,
        "status_url": f"{base}/api/builds/{build_ids[0]}",
    }, 202


def _documented(headers_model: type) -> Callable[[Handler], Handler]:
    """OpenAPI: the raw payload, the provider's headers and every answer a delivery gets."""

    def decorator(func: Handler) -> Handler:
        func = document_request(WebhookPayload)(func)
        func = document_headers(headers_model)(func)
        func = document_response(WebhookAccepted, 202)(func)
        func = document_response(WebhookHandled, 200)(func)
        return document_errors(400, 401, 404, 413, 503)(public(func))

    return decorator


@blueprint.post("/github")
@_documented(GitHubDeliveryHeaders)
async def github() -> ResponseReturnValue:
    """A GitHub push (or ping) delivery, signed with the project's webhook secret.

    Answers 202 with the build ids once the builds are recorded; redeliveries, pings,
    deletions and unwanted tags are answered 200 without a build.
    """
    ctx = gateway()
    body = await _raw_body(ctx)
    headers = request.headers
    payload = github_body_json(body, headers.get("Content-Type"))
    event = parse_github_delivery(
        headers.get("X-GitHub-Event"), headers.get("X-GitHub-Delivery"), payload
    )
    candidates = await _projects_for(ctx, event)
    signature = headers.get("X-Hub-Signature-256")
    verified = [
        project
        for project, secrets in await accepted_secrets(ctx.redis, candidates)
        if any(verify_github_signature(secret, body, signature) for secret in secrets)
    ]
    if not verified:
        log.warning("github delivery %s: bad or missing signature", event.delivery_id)
        raise ApiError(
            401,
            "invalid signature",
            "X-Hub-Signature-256 does not match the project's webhook secret",
        )
    return await _accept(ctx, event, verified, body)


@blueprint.post("/gitlab")
@_documented(GitLabDeliveryHeaders)
async def gitlab() -> ResponseReturnValue:
    """A GitLab push (or tag push) delivery carrying the project's secret token.

    Answers like the GitHub route.
    """
    ctx = gateway()
    body = await _raw_body(ctx)
    headers = request.headers
    delivery_id = headers.get("Idempotency-Key") or headers.get("X-Gitlab-Event-UUID")
    event = parse_gitlab_delivery(headers.get("X-Gitlab-Event"), delivery_id, body)
    candidates = await _projects_for(ctx, event)
    token = headers.get("X-Gitlab-Token")
    verified = [
        project
        for project, secrets in await accepted_secrets(ctx.redis, candidates)
        if any(verify_gitlab_token(secret, token) for secret in secrets)
    ]
    if not verified:
        log.warning("gitlab delivery %s: bad or missing token", delivery_id)
        raise ApiError(
            401, "invalid token", "X-Gitlab-Token does not match the project's webhook secret"
        )
    return await _accept(ctx, event, verified, body)
