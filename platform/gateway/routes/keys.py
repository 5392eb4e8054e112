"""Personal API keys for CI and scripts: create (shown once), list, revoke."""

from __future__ import annotations

from quart import Blueprint
from quart.typing import ResponseReturnValue
from quart_schema import tag_blueprint, validate_request, validate_response

from gobuild.platform.auth.api_keys import ApiKey
from gobuild.platform.auth.permissions import Action, can_grant_scopes
from gobuild.platform.auth.users import UnknownUser, UserError
from gobuild.platform.gateway.authorization import require
from gobuild.platform.gateway.context import gateway
from gobuild.platform.gateway.errors import ApiError
from gobuild.platform.gateway.openapi import document_raw_response
from gobuild.platform.gateway.schemas import ApiKeyCreate, ApiKeyCreated, ApiKeyList, ApiKeyView

blueprint = Blueprint("keys", __name__, url_prefix="/api/keys")
tag_blueprint(blueprint, ["api keys"])

_NOT_A_USER = "the admin API key cannot own API keys; sign in as a user"


def key_view(key: ApiKey) -> ApiKeyView:
    return ApiKeyView(**key.public())


@blueprint.post("")
@validate_request(ApiKeyCreate)
@validate_response(ApiKeyCreated, 201)
async def create_key(data: ApiKeyCreate) -> ResponseReturnValue:
    """Create an API key; the key (`gb_...`) is in this answer only."""
    principal = require(Action.KEYS_MANAGE)
    if principal.kind == "admin_key":
        raise ApiError(403, "forbidden", _NOT_A_USER)
    if not can_grant_scopes(principal, data.scopes):
        raise ApiError(
            403,
            "forbidden",
            "a key can only get scopes its creator has, and only admins grant users:admin",
        )
    try:
        record, plaintext = await gateway().auth.api_keys.create(
            principal.username, data.name, data.scopes, data.expires_at
        )
    except UnknownUser:
        raise ApiError(401, "invalid credentials", "the user no longer exists") from None
    except UserError as error:
        raise ApiError(422, "invalid API key", str(error)) from None
    return ApiKeyCreated(**record.public(), key=plaintext), 201


@blueprint.get("")
@validate_response(ApiKeyList)
async def list_keys() -> ResponseReturnValue:
    """The caller's API keys, newest first, with when each was last used."""
    principal = require(Action.KEYS_MANAGE)
    if principal.kind == "admin_key":
        return ApiKeyList(keys=[])
    keys = await gateway().auth.api_keys.list(principal.username)
    return ApiKeyList(keys=[key_view(k) for k in keys])


@blueprint.delete("/<key_id>")
@document_raw_response(204, "Revoked: the key no longer works.")
async def revoke_key(key_id: str) -> ResponseReturnValue:
    """Revoke one of the caller's API keys; it stops working at once."""
    principal = require(Action.KEYS_MANAGE)
    if principal.kind == "admin_key" or not await gateway().auth.api_keys.revoke(
        key_id, principal.username
    ):
        raise ApiError(404, "API key not found", key_id)
    return "", 204
