"""Rate limits at the edge: which budget a request spends, whose it is, and the headers.

Budgets (GOBUILD_RATE_LIMIT_*): `login` per client address (password logins, OAuth sign-in,
failed credentials), `webhook` per client address, `api` per API key, per user, or per client
address when anonymous. Every limited response carries `RateLimit-Limit`, `RateLimit-Remaining`
and `RateLimit-Reset`; a refused one is 429 with `Retry-After`.
"""

from __future__ import annotations

from quart import Response, g, request

from gobuild.platform.auth.permissions import Principal
from gobuild.platform.auth.ratelimit import RateLimitResult
from gobuild.platform.config import RateLimitBucket
from gobuild.platform.gateway.context import GatewayContext
from gobuild.platform.gateway.errors import ApiError

_RESULT = "gobuild_rate_limit"


def client_address(ctx: GatewayContext) -> str:
    """The client's address: the connecting peer, or the entry of X-Forwarded-For that the
    nearest trusted proxy added (GOBUILD_TRUSTED_PROXY_HOPS)."""
    hops = ctx.gateway_settings.trusted_proxy_hops
    if hops:
        forwarded = [
            part.strip()
            for header in request.headers.getlist("X-Forwarded-For")
            for part in header.split(",")
            if part.strip()
        ]
        if len(forwarded) >= hops:
            return forwarded[-hops]
    return request.remote_addr or "unknown"


def budget_owner(principal: Principal | None, address: str) -> str:
    """Whose budget a request spends: the API key's, the user's, else the address's."""
    if principal is None:
        return f"ip:{address}"
    if principal.kind == "api_key" and principal.key_id:
        return f"key:{principal.key_id}"
    if principal.kind == "admin_key":
        return "admin-key"
    return f"user:{principal.username}"


async def spend(ctx: GatewayContext, bucket: RateLimitBucket, owner: str) -> RateLimitResult:
    """Count one request against a budget; raises 429 when it is spent."""
    result = await ctx.auth.rate_limiter.hit_bucket(bucket, owner)
    setattr(g, _RESULT, result)
    if not result.allowed:
        raise ApiError(
            429,
            "too many requests",
            f"the {bucket.value} rate limit is {result.limit} requests per "
            f"{ctx.auth.settings.rate_limit(bucket)[1]} seconds; retry in "
            f"{result.retry_after} seconds",
            result.headers(),
        )
    return result


def add_rate_limit_headers(response: Response) -> Response:
    """`after_request`: the `RateLimit-*` headers of the budget this request spent."""
    result: RateLimitResult | None = g.get(_RESULT)
    if result is not None:
        for name, value in result.headers().items():
            response.headers.setdefault(name, value)
    return response
