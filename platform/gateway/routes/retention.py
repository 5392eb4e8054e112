"""Retention: a project's policy (owners set overrides of the instance defaults), and for
instance admins a run now (`?dry_run=1` only reports) and the reports of past runs.

"Run now" calls the same library the retention service runs on its schedule, under the same
lock: while one run is going, another answers 409.
"""

from __future__ import annotations

from pydantic import ValidationError
from quart import Blueprint
from quart.typing import ResponseReturnValue
from quart_schema import tag_blueprint, validate_querystring, validate_request, validate_response

from gobuild.platform.auth.permissions import Action
from gobuild.platform.gateway.authorization import require
from gobuild.platform.gateway.context import GatewayContext, gateway
from gobuild.platform.gateway.errors import ApiError, describe_validation_error
from gobuild.platform.gateway.openapi import document_errors
from gobuild.platform.gateway.routes.projects import find_project
from gobuild.platform.gateway.schemas import (
    ProjectRetentionView,
    RetentionPolicyUpdate,
    RetentionReportList,
    RetentionReportQuery,
    RetentionRunQuery,
)
from gobuild.platform.retention_records import (
    RetentionOverrides,
    RetentionPolicy,
    RetentionReport,
)
from gobuild.platform.storage_client import StorageClient, StorageError
from gobuild.platform.stores.retention import LockLost, RetentionPolicies, RetentionReports
from gobuild.retention.lease import RetentionBusy
from gobuild.retention.policy import project_policy
from gobuild.retention.sweep import RetentionSweep

blueprint = Blueprint("retention", __name__)
tag_blueprint(blueprint, ["retention"])

STORAGE_RETRY_AFTER_SECONDS = 30


async def retention_view(ctx: GatewayContext, project_id: str) -> ProjectRetentionView:
    policy, overrides = await project_policy(ctx.redis, ctx.retention_settings, project_id)
    return ProjectRetentionView(
        project_id=project_id,
        policy=policy,
        overrides=overrides,
        defaults=RetentionPolicy.instance_default(ctx.retention_settings),
    )


@blueprint.get("/api/projects/<project_ref>/retention")
@validate_response(ProjectRetentionView)
async def get_project_retention(project_ref: str) -> ResponseReturnValue:
    """What retention keeps of the project: the effective policy, the project's overrides and
    the instance defaults."""
    ctx = gateway()
    project = await find_project(ctx, project_ref)
    return await retention_view(ctx, project.id)


@blueprint.put("/api/projects/<project_ref>/retention")
@validate_request(RetentionPolicyUpdate)
@validate_response(ProjectRetentionView)
async def set_project_retention(
    project_ref: str, data: RetentionPolicyUpdate
) -> ResponseReturnValue:
    """Set the project's overrides of the instance's retention defaults (owners). Build
    records must be kept at least as long as artifacts and deployments (422 otherwise)."""
    ctx = gateway()
    project = await find_project(ctx, project_ref, Action.PROJECT_UPDATE)
    overrides = RetentionOverrides.model_validate(data.model_dump())
    try:
        overrides.apply(RetentionPolicy.instance_default(ctx.retention_settings))
    except ValidationError as exc:
        raise ApiError(422, "invalid retention policy", describe_validation_error(exc)) from None
    await RetentionPolicies(ctx.redis).set(project.id, overrides)
    return await retention_view(ctx, project.id)


@blueprint.post("/api/admin/retention/run")
@validate_querystring(RetentionRunQuery)
@validate_response(RetentionReport)
@document_errors(409, 503)
async def run_retention(query_args: RetentionRunQuery) -> ResponseReturnValue:
    """Run retention now over every project and answer with its report (admins). A dry run
    removes nothing and reports what would go. An unfinished run (interrupted by a crash) is
    finished first."""
    principal = require(Action.RETENTION_MANAGE)
    ctx = gateway()
    dry_run = query_args.dry_run
    if dry_run is None:
        dry_run = ctx.retention_settings.retention_dry_run
    sweep = RetentionSweep(
        redis=ctx.redis,
        storage=StorageClient(ctx.http, ctx.settings),
        share_links=ctx.auth.share_links,
        settings=ctx.retention_settings,
    )
    try:
        return await sweep.run(dry_run=dry_run, trigger="api", requested_by=principal.username)
    except (RetentionBusy, LockLost) as exc:
        raise ApiError(
            409,
            "retention is running",
            f"{exc}; its report is listed by GET /api/admin/retention/reports when it ends",
        ) from None
    except StorageError as exc:
        raise ApiError(
            503,
            "storage unavailable",
            f"{exc}; the run stopped and is reported as failed",
            headers={"Retry-After": str(STORAGE_RETRY_AFTER_SECONDS)},
        ) from None


@blueprint.get("/api/admin/retention/reports")
@validate_querystring(RetentionReportQuery)
@validate_response(RetentionReportList)
async def list_retention_reports(query_args: RetentionReportQuery) -> ResponseReturnValue:
    """The reports of past retention runs, newest first (admins): what each removed (or
    would have), the bytes freed and how long it took."""
    require(Action.RETENTION_MANAGE)
    reports = await RetentionReports(gateway().redis).list(query_args.limit)
    return RetentionReportList(reports=reports)
