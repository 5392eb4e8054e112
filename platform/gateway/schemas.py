"""Request and response bodies of the public API (validated at the edge, described in OpenAPI)."""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field, field_validator

from gobuild.platform.records import PROJECT_NAME_PATTERN, Provider
from gobuild.platform.repo_url import InvalidRepoUrl, validate_repo_url

# A branch name git accepts (`git check-ref-format --branch`), kept deliberately strict.
BRANCH_PATTERN = re.compile(
    r"^(?!-)(?!.*\.\.)(?!.*//)(?!.*@\{)(?!.*\.lock$)[\w./@+-]{1,200}(?<![./])$"
)
SHA_PATTERN = r"^[0-9a-f]{40}([0-9a-f]{24})?$"


def check_branch(value: str) -> str:
    if not BRANCH_PATTERN.match(value) or value.startswith("/") or "/." in value:
        raise ValueError(f"{value!r} is not a valid branch name")
    return value


class ProjectCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(
        pattern=PROJECT_NAME_PATTERN, description="DNS label: the project's host name"
    )
    repo_url: str = Field(description="https:// URL or absolute local path of the git repository")
    provider: Provider = "github"
    production_branch: str = "main"
    build_tags: bool = False
    webhook_secret: str | None = Field(default=None, min_length=16, max_length=256)

    @field_validator("repo_url")
    @classmethod
    def _repo_url(cls, value: str) -> str:
        try:
            return validate_repo_url(value)
        except InvalidRepoUrl as exc:
            raise ValueError(str(exc)) from exc

    @field_validator("production_branch")
    @classmethod
    def _branch(cls, value: str) -> str:
        return check_branch(value)


class BuildCreate(BaseModel):
    """Build a branch (its newest commit) or one exact commit of it, now."""

    model_config = ConfigDict(extra="forbid")

    branch: str | None = None
    commit_sha: str | None = Field(default=None, pattern=SHA_PATTERN)

    @field_validator("branch")
    @classmethod
    def _branch(cls, value: str | None) -> str | None:
        return None if value is None else check_branch(value)


class BuildAccepted(BaseModel):
    build_id: str
    status_url: str


class ErrorBody(BaseModel):
    error: str
    detail: object | None = None
