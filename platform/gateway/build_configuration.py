"""A project's build configuration as its owners change it: the build settings (checked by
their schema) and the build variables, a secret's value encrypted before it is kept."""

from __future__ import annotations

import re

from gobuild.platform.auth.permissions import Principal
from gobuild.platform.gateway.context import GatewayContext
from gobuild.platform.gateway.errors import ApiError
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


async def update_build_settings(
    ctx: GatewayContext, project: Project, changes: ProjectSettingsUpdate
) -> Project:
    """Apply the fields that were sent (null clears one); the project as stored."""
    values = {name: getattr(changes, name) for name in changes.model_fields_set}
    updated = await ctx.projects.update(project.id, lambda p: p.model_copy(update=values))
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
