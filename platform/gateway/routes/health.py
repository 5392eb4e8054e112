"""Liveness (`/healthz`) and readiness (`/readyz`: Kafka, Redis, orchestrator, storage)."""

from __future__ import annotations

import asyncio
import contextlib

import httpx
from aiokafka.errors import KafkaError
from quart import Blueprint, jsonify
from quart.typing import ResponseReturnValue
from quart_schema import document_response, tag_blueprint

from gobuild.platform.bus import ensure_topics
from gobuild.platform.gateway.context import gateway
from gobuild.platform.gateway.openapi import public
from gobuild.platform.gateway.schemas import Health, Readiness
from gobuild.platform.storage_client import HEALTH_PATH
from gobuild.platform.waiting import wait_within

blueprint = Blueprint("health", __name__)
tag_blueprint(blueprint, ["health"])


@blueprint.get("/healthz")
@public
@document_response(Health)
async def healthz() -> ResponseReturnValue:
    """Liveness: the process answers."""
    return {"status": "ok"}


async def _check_http(url: str) -> str:
    ctx = gateway()
    try:
        response = await ctx.http.get(url, headers=ctx.internal_headers(), timeout=3.0)
    except httpx.HTTPError as exc:
        return f"unreachable: {exc.__class__.__name__}"
    return "ok" if response.status_code == 200 else f"status {response.status_code}"


async def _check_redis() -> str:
    try:
        await wait_within(gateway().redis.ping(), 3.0)
    except Exception as exc:
        return f"unreachable: {exc.__class__.__name__}"
    return "ok"


async def _check_kafka() -> str:
    """The broker answers a metadata request, has every topic (each partition with a leader)
    and serves back a probe record sent to it. Missing topics (a broker that lost its data)
    are re-created for the next check."""
    ctx = gateway()
    try:
        missing = await ctx.producer.missing_topics(timeout=3.0)
    except (KafkaError, TimeoutError, OSError) as exc:
        return f"unreachable: {exc.__class__.__name__}"
    if not missing:
        try:
            await ctx.producer.round_trip(timeout=3.0)
        except (KafkaError, TimeoutError, OSError) as exc:
            return f"produce and fetch failed: {exc.__class__.__name__}"
        return "ok"
    with contextlib.suppress(KafkaError, TimeoutError, OSError):
        await wait_within(ensure_topics(ctx.settings, missing), 3.0)
    return f"topics missing: {', '.join(missing)}"


@blueprint.get("/readyz")
@public
@document_response(Readiness)
@document_response(Readiness, 503)
async def readyz() -> ResponseReturnValue:
    """Readiness: Kafka, Redis, the orchestrator and storage are reachable (else 503)."""
    ctx = gateway()
    names = ("kafka", "redis", "orchestrator", "storage")
    results = await asyncio.gather(
        _check_kafka(),
        _check_redis(),
        _check_http(f"{ctx.settings.orchestrator_url}/healthz"),
        _check_http(ctx.settings.storage_url.rstrip("/") + HEALTH_PATH),
    )
    checks = dict(zip(names, results, strict=True))
    ready = all(result == "ok" for result in results)
    response = jsonify({"status": "ready" if ready else "not ready", "checks": checks})
    response.status_code = 200 if ready else 503
    return response
