"""`GET /`: people who open the gateway's address are sent to the dashboard."""

from __future__ import annotations

from quart import Blueprint, redirect
from quart.typing import ResponseReturnValue
from quart_schema import document_response, tag_blueprint

from gobuild.platform.gateway.context import gateway
from gobuild.platform.gateway.openapi import document_raw_response, public
from gobuild.platform.gateway.schemas import Welcome

blueprint = Blueprint("home", __name__)
tag_blueprint(blueprint, ["home"])


@blueprint.get("/")
@public
@document_raw_response(
    302, "To the dashboard (GOBUILD_DASHBOARD_URL).", headers={"Location": "the dashboard"}
)
@document_response(Welcome)
async def home() -> ResponseReturnValue:
    """Redirect to the dashboard; without one configured, say where the API is described."""
    ctx = gateway()
    dashboard = ctx.gateway_settings.dashboard_url
    if dashboard:
        return redirect(dashboard, 302)
    return Welcome(
        name="GoBuild",
        api=f"{ctx.settings.gateway_public_url}/openapi.json",
        detail="this is GoBuild's API; no dashboard is configured (GOBUILD_DASHBOARD_URL)",
    ).model_dump()
