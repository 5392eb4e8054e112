"""Deployment records: listed per project, newest first; the production alias follows new
production deployments until it is pinned by hand, and returns to the newest when un-pinned."""

from __future__ import annotations

import redis.asyncio as aioredis

from gobuild.platform.records import Deployment
from gobuild.platform.stores.deployment_records import DeploymentRecords

PROJECT = "p_site"


def deployment(number: int, project_id: str = PROJECT) -> Deployment:
    return Deployment(
        id=f"site-{number:010d}",
        project_id=project_id,
        build_id=f"b_{number}",
        number=number,
        branch="main",
        commit_sha=f"{number:x}".rjust(40, "0"),
        url=f"http://site-{number:010d}.localhost/",
    )


async def deploy_automatically(records: DeploymentRecords, new: Deployment) -> bool:
    """What the builder does: decide against the alias it read, then compare-and-set."""
    return await records.promote_if_newer(new, await records.production_alias(new.project_id))


async def test_deployments_are_listed_per_project_newest_build_first(
    redis: aioredis.Redis,
) -> None:
    records = DeploymentRecords(redis)
    for number in (2, 1, 3):
        await records.create(deployment(number))
    await records.create(deployment(9, project_id="p_other"))
    listed = await records.list_for_project(PROJECT)
    assert [d.number for d in listed] == [3, 2, 1]
    assert [d.number for d in await records.list_for_project(PROJECT, limit=2)] == [3, 2]
    assert await records.list_for_project("p_empty") == []


async def test_a_pinned_alias_is_not_moved_by_new_production_deployments(
    redis: aioredis.Redis,
) -> None:
    records = DeploymentRecords(redis)
    first, second, third = deployment(1), deployment(2), deployment(3)
    assert await deploy_automatically(records, first)
    assert await deploy_automatically(records, second)

    replaced = await records.promote_and_pin(first)
    assert replaced is not None and replaced.deployment_id == second.id
    alias = await records.production_alias(PROJECT)
    assert alias is not None and alias.deployment_id == first.id and alias.pinned
    head = await records.production_head(PROJECT)
    assert head is not None and head.deployment_id == second.id

    assert not await deploy_automatically(records, third)
    alias = await records.production_alias(PROJECT)
    assert alias is not None and alias.deployment_id == first.id and alias.pinned
    head = await records.production_head(PROJECT)
    assert head is not None and head.deployment_id == third.id


async def test_unpin_serves_the_newest_production_deployment_again(
    redis: aioredis.Redis,
) -> None:
    records = DeploymentRecords(redis)
    for number in (1, 2):
        assert await deploy_automatically(records, deployment(number))
    await records.promote_and_pin(deployment(1))
    assert not await deploy_automatically(records, deployment(3))

    changed = await records.unpin(PROJECT)
    assert changed is not None
    before, after = changed
    assert (before.deployment_id, before.pinned) == (deployment(1).id, True)
    assert (after.deployment_id, after.pinned) == (deployment(3).id, False)
    assert await records.production_alias(PROJECT) == after
    assert await records.production_head(PROJECT) == after
    assert await records.unpin(PROJECT) is None  # not pinned any more: nothing to do

    # Following again: the next production deployment takes the alias.
    assert await deploy_automatically(records, deployment(4))
    alias = await records.production_alias(PROJECT)
    assert alias is not None and alias.deployment_id == deployment(4).id


async def test_promoting_again_while_pinned_keeps_the_newest_to_return_to(
    redis: aioredis.Redis,
) -> None:
    records = DeploymentRecords(redis)
    for number in (1, 2, 3):
        assert await deploy_automatically(records, deployment(number))
    await records.promote_and_pin(deployment(1))
    await records.promote_and_pin(deployment(2))
    changed = await records.unpin(PROJECT)
    assert changed is not None and changed[1].deployment_id == deployment(3).id


async def test_unpin_without_a_newer_deployment_keeps_the_pinned_one(
    redis: aioredis.Redis,
) -> None:
    records = DeploymentRecords(redis)
    await records.promote_and_pin(deployment(1))  # no alias before: nothing to return to
    changed = await records.unpin(PROJECT)
    assert changed is not None
    assert (changed[1].deployment_id, changed[1].pinned) == (deployment(1).id, False)
