"""The policy that applies to a project: the instance defaults (GOBUILD_RETENTION_*) with the
project's overrides."""

from __future__ import annotations

import redis.asyncio as aioredis

from gobuild.platform.config import RetentionSettings
from gobuild.platform.retention_records import RetentionOverrides, RetentionPolicy
from gobuild.platform.stores.retention import RetentionPolicies


async def project_policy(
    redis: aioredis.Redis, settings: RetentionSettings, project_id: str
) -> tuple[RetentionPolicy, RetentionOverrides]:
    """The effective policy of the project and the overrides it was made from."""
    overrides = await RetentionPolicies(redis).get(project_id)
    defaults = RetentionPolicy.instance_default(settings)
    return overrides.apply_leniently(defaults), overrides
