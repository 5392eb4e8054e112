"""The scheduler as the API shows it: the queue of waiting builds (each caller sees the builds
of their projects, at their places among all) and, for instance admins, the builders."""

from __future__ import annotations

from quart import Blueprint
from quart.typing import ResponseReturnValue
from quart_schema import tag_blueprint, validate_response

from gobuild.platform.auth.permissions import Action, scopes_allow
from gobuild.platform.gateway.authorization import (
    current_principal,
    require_instance_admin,
    why_not,
)
from gobuild.platform.gateway.builder_status import builder_list
from gobuild.platform.gateway.context import gateway
from gobuild.platform.gateway.errors import ApiError
from gobuild.platform.gateway.queue_status import queue_list
from gobuild.platform.gateway.schemas import BuilderList, QueueList

blueprint = Blueprint("scheduler", __name__, url_prefix="/api")
tag_blueprint(blueprint, ["scheduler"])


@blueprint.get("/queue")
@validate_response(QueueList)
async def get_queue() -> ResponseReturnValue:
    """The builds waiting for a builder, the next first: only those of projects the caller may
    read, each with its place among all waiting builds, why it waits and when it is expected
    to start; and the instance's totals (waiting, running, builder slots)."""
    principal = current_principal()
    if principal.scopes is not None and not scopes_allow(principal.scopes, Action.BUILD_READ):
        raise ApiError(403, "forbidden", why_not(principal, Action.BUILD_READ))
    return await queue_list(gateway(), principal)


@blueprint.get("/builders")
@validate_response(BuilderList)
async def get_builders() -> ResponseReturnValue:
    """The builders (instance admins only): online ones with their host, slots, labels, CPUs,
    memory and builds; lost ones (no heartbeat, for a day) with when they were last seen and
    the builds still given to them."""
    principal = require_instance_admin("the list of builders")
    return await builder_list(gateway(), principal)
