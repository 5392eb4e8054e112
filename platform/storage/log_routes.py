"""Route for build logs: what is written so far, or a live follow until the log completes."""

from __future__ import annotations

from quart import Blueprint, Response, request

from gobuild.platform.api_errors import ApiError
from gobuild.platform.storage.file_response import file_response
from gobuild.platform.storage.identifiers import require_build_id
from gobuild.platform.storage.services import services

blueprint = Blueprint("logs", __name__)

LOG_CONTENT_TYPE = "text/plain; charset=utf-8"
COMPLETE_HEADER = "X-Log-Complete"
# `<attempt>:<seq>` of the last chunk in the log served (absent before the first chunk), so a
# reader that also follows `build-logs` knows which chunks the text already holds.
POSITION_HEADER = "X-Log-Position"
# A follower of a build that never finishes is let go after this long.
MAX_FOLLOW_SECONDS = 2 * 3600
TRUE_VALUES = frozenset({"1", "true", "yes", "on"})


@blueprint.get("/logs/<build_id>")
async def read_log(build_id: str) -> Response:
    require_build_id(build_id)
    store = services().logs
    follow = request.args.get("follow", "").lower() in TRUE_VALUES and request.method == "GET"
    progress = await store.progress(build_id)
    headers = {
        COMPLETE_HEADER: "true" if progress is not None and progress.complete else "false",
        "Cache-Control": "no-store",
    }
    if follow:
        # Also before the first line: a viewer may attach as soon as the build is queued.
        headers["X-Accel-Buffering"] = "no"
        response = Response(
            store.follow(build_id, MAX_FOLLOW_SECONDS),
            content_type=LOG_CONTENT_TYPE,
            headers=headers,
        )
        response.timeout = MAX_FOLLOW_SECONDS + 60
        return response
    if progress is None:
        raise ApiError(404, "log not found", f"build '{build_id}' has no log yet")
    headers[POSITION_HEADER] = f"{progress.attempt}:{progress.seq}"
    return await file_response(
        store.log_path(build_id), size=progress.size, content_type=LOG_CONTENT_TYPE, headers=headers
    )


@blueprint.delete("/logs/<build_id>")
async def delete_log(build_id: str) -> tuple[str, int]:
    require_build_id(build_id)
    await services().logs.delete(build_id)
    return "", 204
