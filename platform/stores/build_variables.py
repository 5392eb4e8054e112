"""A project's build variables in Redis: one hash per project, name -> `BuildVariable`."""

from __future__ import annotations

import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline

from gobuild.platform.records import BuildTarget, BuildVariable
from gobuild.platform.stores.keys import key_project_variables
from gobuild.platform.stores.optimistic import optimistic_update

# Variables one project may have.
MAX_VARIABLES = 200


class TooManyVariables(RuntimeError):
    """The project has `MAX_VARIABLES` already."""


class BuildVariableStore:
    """The environment variables of each project's builds (a secret's value as stored:
    encrypted)."""

    def __init__(self, redis: aioredis.Redis) -> None:
        self.redis = redis

    async def put(self, project_id: str, variable: BuildVariable) -> bool:
        """Set (add or replace) a variable; True if it is new. TooManyVariables when a new
        one does not fit."""
        key = key_project_variables(project_id)

        async def transaction(pipe: Pipeline) -> bool:
            exists = bool(await pipe.hexists(key, variable.name))
            if not exists and await pipe.hlen(key) >= MAX_VARIABLES:
                raise TooManyVariables(
                    f"a project has at most {MAX_VARIABLES} variables; delete one first"
                )
            pipe.multi()
            pipe.hset(key, variable.name, variable.model_dump_json())
            return not exists

        return await optimistic_update(
            self.redis, [key], transaction, what=f"variables of {project_id}"
        )

    async def get(self, project_id: str, name: str) -> BuildVariable | None:
        raw = await self.redis.hget(key_project_variables(project_id), name)
        return BuildVariable.model_validate_json(raw) if raw else None

    async def list(self, project_id: str) -> list[BuildVariable]:
        """Every variable of the project, by name."""
        raws = await self.redis.hvals(key_project_variables(project_id))
        return sorted((BuildVariable.model_validate_json(r) for r in raws), key=lambda v: v.name)

    async def delete(self, project_id: str, name: str) -> bool:
        return bool(await self.redis.hdel(key_project_variables(project_id), name))

    async def for_target(self, project_id: str, target: BuildTarget) -> list[BuildVariable]:
        """The variables a build for `target` (production or preview) gets."""
        return [v for v in await self.list(project_id) if target in v.targets]
