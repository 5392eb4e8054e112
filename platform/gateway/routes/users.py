"""Users of the instance (admins only): create, list, delete."""

from __future__ import annotations

from quart import Blueprint
from quart.typing import ResponseReturnValue
from quart_schema import tag_blueprint, validate_request, validate_response

from gobuild.platform.auth.permissions import Action
from gobuild.platform.auth.users import (
    EmailInUse,
    LastAdminError,
    User,
    UserError,
    UserExists,
)
from gobuild.platform.gateway.authorization import require
from gobuild.platform.gateway.context import gateway
from gobuild.platform.gateway.errors import ApiError
from gobuild.platform.gateway.openapi import document_errors, document_raw_response
from gobuild.platform.gateway.schemas import UserCreate, UserList, UserView

blueprint = Blueprint("users", __name__, url_prefix="/api/users")
tag_blueprint(blueprint, ["users"])


def user_view(user: User) -> UserView:
    return UserView(**user.public())


@blueprint.post("")
@validate_request(UserCreate)
@validate_response(UserView, 201)
@document_errors(409)
async def create_user(data: UserCreate) -> ResponseReturnValue:
    """Create a user with a password (and optionally an email and the admin role)."""
    require(Action.USERS_MANAGE)
    try:
        user = await gateway().auth.users.create(
            data.username,
            password=data.password,
            email=data.email,
            email_verified=data.email_verified,
            is_admin=data.admin,
        )
    except (UserExists, EmailInUse) as error:
        raise ApiError(409, "user exists", str(error)) from None
    except UserError as error:
        raise ApiError(422, "invalid user", str(error)) from None
    return user_view(user), 201


@blueprint.get("")
@validate_response(UserList)
async def list_users() -> ResponseReturnValue:
    """Every user, oldest first."""
    require(Action.USERS_MANAGE)
    return UserList(users=[user_view(u) for u in await gateway().auth.users.list()])


@blueprint.delete("/<username>")
@document_raw_response(204, "Deleted, with their memberships, API keys and sessions.")
@document_errors(409)
async def delete_user(username: str) -> ResponseReturnValue:
    """Delete a user; their API keys and refresh tokens stop working at once."""
    require(Action.USERS_MANAGE)
    try:
        deleted = await gateway().auth.users.delete(username)
    except LastAdminError as error:
        raise ApiError(409, "cannot delete the last admin", str(error)) from None
    if not deleted:
        raise ApiError(404, "user not found", username)
    return "", 204
