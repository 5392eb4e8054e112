"""Routes for deployments: unpack a build's artifact, describe, delete, and serve its files."""

from __future__ import annotations

from typing import Any

from quart import Blueprint, Response

from gobuild.platform.api_errors import ApiError
from gobuild.platform.storage.archive import InvalidArchiveError, UnsafeArchiveError
from gobuild.platform.storage.content_types import content_type_for
from gobuild.platform.storage.deployments import ArtifactMissingError, DeploymentConflictError
from gobuild.platform.storage.file_response import file_response
from gobuild.platform.storage.identifiers import (
    BUILD_ID_PATTERN,
    is_valid_build_id,
    is_valid_deployment_id,
    require_deployment_id,
)
from gobuild.platform.storage.json_body import read_json_object
from gobuild.platform.storage.services import services

blueprint = Blueprint("deployments", __name__)

# Deployment content may change under the same URL (promote, rollback): revalidate.
FILE_CACHE_CONTROL = "public, max-age=0, must-revalidate"


@blueprint.post("/deployments/<deployment_id>")
async def create_deployment(deployment_id: str) -> tuple[dict[str, Any], int]:
    require_deployment_id(deployment_id)
    body = await read_json_object()
    build_id = body.get("build_id")
    if not isinstance(build_id, str) or not is_valid_build_id(build_id):
        raise ApiError(
            400,
            "invalid build id",
            f"build_id must be a string matching {BUILD_ID_PATTERN.pattern}",
        )
    try:
        info, created = await services().deployments.deploy(deployment_id, build_id)
    except ArtifactMissingError as exc:
        raise ApiError(404, "artifact not found", str(exc)) from exc
    except DeploymentConflictError as exc:
        raise ApiError(409, "deployment exists", str(exc)) from exc
    except UnsafeArchiveError as exc:
        raise ApiError(422, "unsafe archive", str(exc)) from exc
    except InvalidArchiveError as exc:
        raise ApiError(422, "invalid archive", str(exc)) from exc
    return info.as_json(), 201 if created else 200


@blueprint.get("/deployments/<deployment_id>")
async def describe_deployment(deployment_id: str) -> dict[str, Any]:
    require_deployment_id(deployment_id)
    info = await services().deployments.describe(deployment_id)
    if info is None:
        raise ApiError(404, "deployment not found", f"no deployment '{deployment_id}'")
    return info.as_json()


@blueprint.delete("/deployments/<deployment_id>")
async def delete_deployment(deployment_id: str) -> tuple[str, int]:
    require_deployment_id(deployment_id)
    await services().deployments.delete(deployment_id)
    return "", 204


@blueprint.get("/deployments/<deployment_id>/files/", defaults={"path": ""})
@blueprint.get("/deployments/<deployment_id>/files/<path:path>")
async def serve_deployment_file(deployment_id: str, path: str) -> Response:
    found = None
    if is_valid_deployment_id(deployment_id):
        found = await services().deployments.find_file(deployment_id, path)
    if found is None:
        raise ApiError(404, "not found", f"no file at '/{path}' in deployment '{deployment_id}'")
    return await file_response(
        found.path,
        size=found.size,
        content_type=content_type_for(found.path.name),
        etag=found.etag,
        last_modified=found.modified,
        headers={"Cache-Control": FILE_CACHE_CONTROL},
    )
