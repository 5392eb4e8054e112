"""Deployment records in Redis and each project's production alias."""

from __future__ import annotations

import redis.asyncio as aioredis

from gobuild.platform.records import Deployment, ProductionAlias
from gobuild.platform.stores.keys import (
    key_deployment,
    key_production_alias,
    key_production_head,
    key_project_deployments,
)

# Promote a deployment to the production alias only if the alias still holds the deployment the
# caller decided against (ARGV[3]; '' for none) and that one's build is older.
# A pinned alias (KEYS[1]) stays where it is: the newest production deployment is kept in
# KEYS[2] instead, for when the alias is un-pinned (ARGV[3] may name either).
_PROMOTE_IF_NEWER = """
local current = redis.call('GET', KEYS[1])
if current then
  local decoded = cjson.decode(current)
  if decoded['pinned'] == true then
    local head_raw = redis.call('GET', KEYS[2])
    local head = decoded
    if head_raw then
      head = cjson.decode(head_raw)
    end
    if head['deployment_id'] ~= ARGV[3] and decoded['deployment_id'] ~= ARGV[3] then
      return 0
    end
    if tonumber(head['number']) < tonumber(ARGV[2]) then
      redis.call('SET', KEYS[2], ARGV[1])
    end
    return 0
  end
  if decoded['deployment_id'] ~= ARGV[3] then
    return 0
  end
  if tonumber(decoded['number']) >= tonumber(ARGV[2]) then
    return 0
  end
elseif ARGV[3] ~= '' then
  return 0
end
redis.call('SET', KEYS[1], ARGV[1])
return 1
"""

# Point the alias (KEYS[1]) at ARGV[1] and pin it; an alias that was following the newest
# production deployment is remembered as that (KEYS[2]). Returns the alias it replaced.
_PROMOTE_AND_PIN = """
local current = redis.call('GET', KEYS[1])
if current and cjson.decode(current)['pinned'] ~= true then
  redis.call('SET', KEYS[2], current)
end
redis.call('SET', KEYS[1], ARGV[1])
return current or false
"""

# Un-pin the alias (KEYS[1]) and point it at the newest production deployment (KEYS[2]) if
# one was kept. Returns {alias before, alias after}, or false when it was not pinned.
_UNPIN = """
local current = redis.call('GET', KEYS[1])
if not current then
  return false
end
local decoded = cjson.decode(current)
if decoded['pinned'] ~= true then
  return false
end
local following = redis.call('GET', KEYS[2])
if not following then
  decoded['pinned'] = false
  following = cjson.encode(decoded)
end
redis.call('SET', KEYS[1], following)
redis.call('DEL', KEYS[2])
return {current, following}
"""


class DeploymentRecords:
    """Deployment records and the production alias of each project (the files are in storage)."""

    def __init__(self, redis: aioredis.Redis) -> None:
        self.redis = redis

    async def create(self, deployment: Deployment) -> None:
        """Store the record and list it among its project's deployments (by build number)."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.set(key_deployment(deployment.id), deployment.model_dump_json())
            pipe.zadd(
                key_project_deployments(deployment.project_id), {deployment.id: deployment.number}
            )
            await pipe.execute()

    async def get(self, deployment_id: str) -> Deployment | None:
        raw = await self.redis.get(key_deployment(deployment_id))
        return Deployment.model_validate_json(raw) if raw else None

    async def promote_if_newer(
        self, deployment: Deployment, replacing: ProductionAlias | None
    ) -> bool:
        """Point the production alias at `deployment` if it still holds `replacing` (what the
        caller read and decided on; None: no alias) and that is an older build's."""
        alias = ProductionAlias(
            deployment_id=deployment.id,
            number=deployment.number,
            commit_sha=deployment.commit_sha,
        )
        promoted = await self.redis.eval(
            _PROMOTE_IF_NEWER,
            2,
            key_production_alias(deployment.project_id),
            key_production_head(deployment.project_id),
            alias.model_dump_json(),
            deployment.number,
            replacing.deployment_id if replacing else "",
        )
        return bool(promoted)

    async def production_alias(self, project_id: str) -> ProductionAlias | None:
        raw = await self.redis.get(key_production_alias(project_id))
        return ProductionAlias.model_validate_json(raw) if raw else None

    async def production_head(self, project_id: str) -> ProductionAlias | None:
        """The production deployment the alias follows when it is not pinned: while it is
        pinned, the newest one that would have taken it; else the alias itself."""
        alias_raw, head_raw = await self.redis.mget(
            [key_production_alias(project_id), key_production_head(project_id)]
        )
        alias = ProductionAlias.model_validate_json(alias_raw) if alias_raw else None
        if alias is not None and alias.pinned and head_raw:
            return ProductionAlias.model_validate_json(head_raw)
        return alias

    async def promote_and_pin(self, deployment: Deployment) -> ProductionAlias | None:
        """Point the production alias at `deployment` (any of its project's) and pin it there;
        returns the alias it replaced."""
        alias = ProductionAlias(
            deployment_id=deployment.id,
            number=deployment.number,
            commit_sha=deployment.commit_sha,
            pinned=True,
        )
        previous = await self.redis.eval(
            _PROMOTE_AND_PIN,
            2,
            key_production_alias(deployment.project_id),
            key_production_head(deployment.project_id),
            alias.model_dump_json(),
        )
        return ProductionAlias.model_validate_json(previous) if previous else None

    async def unpin(self, project_id: str) -> tuple[ProductionAlias, ProductionAlias] | None:
        """Un-pin the alias; it serves the newest production deployment again. Returns the
        alias before and after, or None when it was not pinned."""
        result = await self.redis.eval(
            _UNPIN, 2, key_production_alias(project_id), key_production_head(project_id)
        )
        if not result:
            return None
        before, after = result
        return (
            ProductionAlias.model_validate_json(before),
            ProductionAlias.model_validate_json(after),
        )

    async def list_for_project(self, project_id: str, limit: int = 50) -> list[Deployment]:
        """The project's deployments, newest build first."""
        ids = await self.redis.zrevrange(key_project_deployments(project_id), 0, limit - 1)
        if not ids:
            return []
        raws = await self.redis.mget([key_deployment(i) for i in ids])
        return [Deployment.model_validate_json(r) for r in raws if r]

    async def remove(self, deployment: Deployment) -> None:
        """Forget a deployment's record (its files are storage's to remove)."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.delete(key_deployment(deployment.id))
            pipe.zrem(key_project_deployments(deployment.project_id), deployment.id)
            await pipe.execute()
