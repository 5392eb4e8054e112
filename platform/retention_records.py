"""Records of retention kept in Redis and shown by the API: the policy (instance defaults and a
project's overrides), the plan a run works through, and the report every run leaves.

The gateway writes a project's overrides and reads reports; the retention job (and the
gateway's "run now") plans, removes and reports.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal, get_args

from pydantic import BaseModel, Field, model_validator

from gobuild.platform.cache_records import StoredCacheKind, cache_field
from gobuild.platform.config import RetentionSettings

# What a run removes. Of caches, the ones storage keeps (dependencies, incremental); each
# builder prunes its own layer-cache images.
RetentionCategory = Literal["artifacts", "logs", "deployments", "build_records", "caches"]
RETENTION_CATEGORIES: tuple[RetentionCategory, ...] = get_args(RetentionCategory)

MAX_DAYS = 36500
MAX_KEEP_LAST = 100_000
# A report lists at most this many ids per category (the counts and bytes are complete).
MAX_LISTED_IDS = 1000


class RetentionPolicy(BaseModel):
    """What is kept, per project: the instance defaults with the project's overrides."""

    artifact_days: int = Field(
        ge=1, le=MAX_DAYS, description="artifacts and logs of finished builds are kept this long"
    )
    keep_last: int = Field(
        ge=0,
        le=MAX_KEEP_LAST,
        description="the newest N builds keep everything (artifacts, logs, deployment, record) "
        "whatever their age",
    )
    deployment_days: int = Field(
        ge=1, le=MAX_DAYS, description="deployments (files and records) are kept this long"
    )
    record_days: int = Field(
        ge=1,
        le=MAX_DAYS,
        description="build records and their Redis keys are kept this long; at least as long "
        "as artifact_days and deployment_days",
    )
    cache_days: int = Field(
        ge=1,
        le=MAX_DAYS,
        description="dependency and incremental caches no build used for this long are removed",
    )

    @model_validator(mode="after")
    def _records_outlive_files(self) -> RetentionPolicy:
        if self.record_days < max(self.artifact_days, self.deployment_days):
            raise ValueError(
                "record_days must be at least artifact_days and deployment_days: a build "
                "record outlives its artifacts, log and deployment"
            )
        return self

    @classmethod
    def instance_default(cls, settings: RetentionSettings) -> RetentionPolicy:
        """The policy of every project without overrides (GOBUILD_RETENTION_*)."""
        return cls(
            artifact_days=settings.retention_artifact_days,
            keep_last=settings.retention_keep_last,
            deployment_days=settings.retention_deployment_days,
            record_days=settings.retention_record_days,
            cache_days=settings.retention_cache_days,
        )


class RetentionOverrides(BaseModel):
    """A project's departures from the instance defaults; None: the default applies."""

    artifact_days: int | None = Field(default=None, ge=1, le=MAX_DAYS)
    keep_last: int | None = Field(default=None, ge=0, le=MAX_KEEP_LAST)
    deployment_days: int | None = Field(default=None, ge=1, le=MAX_DAYS)
    record_days: int | None = Field(default=None, ge=1, le=MAX_DAYS)
    cache_days: int | None = Field(default=None, ge=1, le=MAX_DAYS)

    def apply(self, defaults: RetentionPolicy) -> RetentionPolicy:
        """The effective policy; raises ValueError when the overrides contradict themselves
        or the defaults (records kept shorter than files)."""
        return RetentionPolicy.model_validate(
            {**defaults.model_dump(), **self.model_dump(exclude_none=True)}
        )

    def apply_leniently(self, defaults: RetentionPolicy) -> RetentionPolicy:
        """`apply`, except that records are kept as long as the files when the defaults
        changed since the overrides were set and the two now contradict each other."""
        merged = {**defaults.model_dump(), **self.model_dump(exclude_none=True)}
        merged["record_days"] = max(
            merged["record_days"], merged["artifact_days"], merged["deployment_days"]
        )
        return RetentionPolicy.model_validate(merged)


class PlannedRemoval(BaseModel):
    """One thing a run removes: a build's artifact, log or record, a deployment, or a cache."""

    category: RetentionCategory
    project_id: str
    build_id: str | None = None
    deployment_id: str | None = None
    # A cache: its kind and key, and when a build last used it (as planned).
    cache_kind: StoredCacheKind | None = None
    cache_key: str | None = None
    cache_used_at: datetime | None = None
    # What it held when planned (what removing it frees).
    bytes: int = 0

    @property
    def subject(self) -> str:
        """The id the report lists: the deployment's for deployments, `kind/key` for caches,
        else the build's."""
        if self.category == "caches":
            assert self.cache_kind is not None and self.cache_key is not None
            return cache_field(self.cache_kind, self.cache_key)
        subject = self.deployment_id if self.category == "deployments" else self.build_id
        assert subject is not None
        return subject


RemovalResult = Literal["removed", "kept", "failed"]


class RemovalOutcome(BaseModel):
    """What became of a planned removal: done, kept (it became live since it was planned) or
    failed (storage refused; the next run tries again)."""

    removal: PlannedRemoval
    result: RemovalResult
    detail: str | None = None


class RetentionRun(BaseModel):
    """The run working through a plan (kept in Redis until its report is written)."""

    id: str
    started_at: datetime
    trigger: Literal["schedule", "api"]
    requested_by: str | None = None


class CategoryReport(BaseModel):
    count: int = 0
    bytes: int = 0
    ids: list[str] = Field(
        default_factory=list,
        description="build ids (deployment ids for deployments, `kind/key` for caches), at "
        f"most {MAX_LISTED_IDS}",
    )

    def add(self, removal: PlannedRemoval) -> None:
        self.count += 1
        self.bytes += removal.bytes
        if len(self.ids) < MAX_LISTED_IDS:
            self.ids.append(removal.subject)


class RemovedByCategory(BaseModel):
    artifacts: CategoryReport = Field(default_factory=CategoryReport)
    logs: CategoryReport = Field(default_factory=CategoryReport)
    deployments: CategoryReport = Field(default_factory=CategoryReport)
    build_records: CategoryReport = Field(default_factory=CategoryReport)
    caches: CategoryReport = Field(default_factory=CategoryReport)

    def of(self, category: RetentionCategory) -> CategoryReport:
        report: CategoryReport = getattr(self, category)
        return report


class SkippedRemoval(BaseModel):
    """A planned removal that did not happen, and why."""

    category: RetentionCategory
    id: str
    result: Literal["kept", "failed"]
    detail: str | None = None


class RetentionReport(BaseModel):
    """What one run removed (or, in a dry run, would have removed)."""

    id: str
    dry_run: bool
    status: Literal["completed", "failed"] = Field(
        description="failed: the run stopped early (`error` says why); an unfinished plan is "
        "taken up by the next run"
    )
    trigger: Literal["schedule", "api"]
    requested_by: str | None = None
    started_at: datetime
    finished_at: datetime
    duration_seconds: float
    resumed: bool = Field(
        default=False, description="this run finished a plan that an interrupted run began"
    )
    removed: RemovedByCategory = Field(
        default_factory=RemovedByCategory,
        description="per category, what was removed (dry run: what would be)",
    )
    bytes_freed: int = Field(default=0, description="dry run: what would be freed")
    skipped: list[SkippedRemoval] = Field(default_factory=list)
    error: str | None = None
