"""A project's build configuration as its owners change it: the build and scheduling settings
(checked by their schema, the time limit against the instance's, the dependencies for
cycles) and the build variables, a secret's value encrypted before it is kept."""

from __future__ import annotations

import re

from gobuild.platform.auth.permissions import Principal
from gobuild.platform.gateway.context import GatewayContext
from gobuild.platform.gateway.errors import ApiError
from gobuild.platform.gateway.project_dependencies import (
    DependencyCycle,
    cycle_refused,
    resolve_dependencies,
    update_checking_cycles,
)
from gobuild.platform.gateway.schemas import ProjectSettingsUpdate, VariableSet, VariableView
from gobuild.platform.records import BuildVariable, Project
from gobuild.platform.repo_credentials import BUILD_SECRETS_PURPOSE, SecretCipher
from gobuild.platform.stores.build_variables import BuildVariableStore, TooManyVariables

VARIABLE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
# What GoBuild sets in every step itself (`GOBUILD_BUILD_ID`, `HOME`, ...).
RESERVED_PREFIX = "GOBUILD"
RESERVED_NAMES = frozenset({"HOME", "CI"})


def check_variable_name(name: str) -> str:
    """422 unless `name` is a variable name a project may set."""
    if not VARIABLE_NAME.match(name):
        raise ApiError(
            422,
            "invalid variable name",
            "a name is letters, digits and '_', not starting with a digit, at most 128 long",
        )
    if name.upper().startswith(RESERVED_PREFIX) or name in RESERVED_NAMES:
        raise ApiError(
            422,
            "reserved variable name",
            f"GoBuild sets {name} itself (names starting with {RESERVED_PREFIX}, "
            f"{', '.join(sorted(RESERVED_NAMES))})",
        )
    return name


def check_build_timeout(ctx: GatewayContext, seconds: int | None) -> None:
    """422 unless the project's own time limit is within the instance's (it may only lower it)."""
    limit = ctx.settings.build_timeout_seconds
    if seconds is not None and seconds > limit:
        raise ApiError(
            422,
            "build_timeout_seconds may only lower the instance's build time limit",
            f"at most {limit} seconds (GOBUILD_BUILD_TIMEOUT_SECONDS); null uses that limit",
        )


async def update_build_settings(
    ctx: GatewayContext, project: Project, changes: ProjectSettingsUpdate, principal: Principal
) -> Project:
    """Apply the fields that were sent (null clears one); the project as stored. New
    dependencies are saved only if they close no cycle (422 naming it)."""
    values = {name: getattr(changes, name) for name in changes.model_fields_set}
    check_build_timeout(ctx, values.get("build_timeout_seconds"))

    def change(stored: Project) -> Project:
        return stored.model_copy(update=values)

    if "depends_on" in values:
        values["depends_on"] = await resolve_dependencies(
            ctx, principal, project, values["depends_on"]
        )
        try:
            updated = await update_checking_cycles(ctx.redis, project.id, change)
        except DependencyCycle as cycle:
            raise cycle_refused(cycle, principal) from None
    else:
        updated = await ctx.projects.update(project.id, change)
    if updated is None:
        raise ApiError(404, "project not found", project.id)
    return updated


def variable_view(variable: BuildVariable) -> VariableView:
    """The variable as the API shows it: a secret's value never."""
    return VariableView(
        **variable.model_dump(exclude={"value"}),
        value=None if variable.secret else variable.value,
    )


async def set_variable(
    ctx: GatewayContext, project: Project, name: str, data: VariableSet, principal: Principal
) -> BuildVariable:
    """Add or replace the variable `name`; a secret's value is encrypted first."""
    value = data.value
    if data.secret:
        cipher = await SecretCipher.load(ctx.redis, ctx.settings, BUILD_SECRETS_PURPOSE)
        value = cipher.encrypt(value)
    variable = BuildVariable(
        name=check_variable_name(name),
        value=value,
        secret=data.secret,
        targets=data.targets,
        updated_by=None if principal.kind == "admin_key" else principal.username,
    )
    try:
        await BuildVariableStore(ctx.redis).put(project.id, variable)
    except TooManyVariables as exc:
        raise ApiError(409, "too many variables", str(exc)) from None
    return variable
