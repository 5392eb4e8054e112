"""Admitting a project's repository: the repository-URL policy applied to the caller, and the
credentials in the URL split off and encrypted before anything is stored or shown."""

from __future__ import annotations

from dataclasses import dataclass

from gobuild.platform.auth.permissions import Principal
from gobuild.platform.gateway.context import GatewayContext
from gobuild.platform.gateway.errors import ApiError
from gobuild.platform.repo_credentials import RepoCredentialCipher
from gobuild.platform.repo_url import (
    InvalidRepoUrl,
    RepoSourcePolicy,
    check_repo_source,
    split_credentials,
)


@dataclass(frozen=True)
class AdmittedRepository:
    """What a project stores about its repository."""

    repo_url: str  # as shown: credentials are `***`
    repo_credentials: str | None  # encrypted `user:token`
    trusted_source: bool


async def admit_repository(
    ctx: GatewayContext, principal: Principal, repo_url: str
) -> AdmittedRepository:
    """The repository as a project of `principal` keeps it; 422 naming `repo_url` when the
    policy refuses it (local paths and internal hosts are for instance admins only)."""
    trusted = principal.is_admin
    policy = RepoSourcePolicy.for_settings(ctx.settings, trusted=trusted)
    try:
        await check_repo_source(repo_url, policy, must_resolve=False)
    except InvalidRepoUrl as exc:
        raise ApiError(
            422,
            "repository URL not allowed",
            [{"field": "repo_url", "message": str(exc)}],
        ) from None
    shown, userinfo = split_credentials(repo_url.strip())
    encrypted = None
    if userinfo is not None:
        cipher = await RepoCredentialCipher.load(ctx.redis, ctx.settings)
        encrypted = cipher.encrypt(userinfo)
    return AdmittedRepository(repo_url=shown, repo_credentials=encrypted, trusted_source=trusted)
