"""Downloads through the dashboard: a build's full log and its artifact, streamed from the
gateway with the signed-in user's token (or a share link's), so the browser never holds a
token and the gateway decides who may download."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from gobuild.ui.context import Dashboard
from gobuild.ui.gateway_api import ApiCallError
from gobuild.ui.pages.frame import is_path_id, is_share_token, to_sign_in
from gobuild.ui.user_session import SignInRequired

PASSED_HEADERS = ("Content-Type", "Content-Length", "X-Checksum-Sha256", "X-Log-Complete")


async def _relay(
    opening: contextlib.AbstractAsyncContextManager[httpx.Response], filename: str
) -> Response:
    stack = contextlib.AsyncExitStack()
    try:
        upstream = await stack.enter_async_context(opening)
    except ApiCallError as exc:
        await stack.aclose()
        return JSONResponse({"error": exc.error, "detail": exc.detail}, status_code=exc.status)
    except BaseException:
        await stack.aclose()
        raise

    async def body() -> AsyncIterator[bytes]:
        try:
            async for chunk in upstream.aiter_raw():
                yield chunk
        finally:
            await stack.aclose()

    headers = {h: upstream.headers[h] for h in PASSED_HEADERS if h in upstream.headers}
    headers["Content-Disposition"] = f'attachment; filename="{filename}"'
    return StreamingResponse(body(), status_code=upstream.status_code, headers=headers)


def register_downloads(app: FastAPI, dashboard: Dashboard) -> None:
    def not_found() -> JSONResponse:
        return JSONResponse({"error": "not found"}, status_code=404)

    async def as_user(request: Request, path: str, filename: str) -> Response:
        session = dashboard.session()
        if not session.signed_in:
            return to_sign_in(request)
        try:
            return await _relay(session.stream(path), filename)
        except SignInRequired:
            return to_sign_in(request)

    @app.get("/builds/{build_id}/log.txt", include_in_schema=False)
    async def build_log(request: Request, build_id: str) -> Response:
        if not is_path_id(build_id):
            return not_found()
        return await as_user(request, f"/api/builds/{build_id}/logs", f"{build_id}.log")

    @app.get("/builds/{build_id}/artifact", include_in_schema=False)
    async def build_artifact(request: Request, build_id: str) -> Response:
        if not is_path_id(build_id):
            return not_found()
        return await as_user(request, f"/api/builds/{build_id}/artifact", f"{build_id}.tar.gz")

    @app.get("/share/{token}/log.txt", include_in_schema=False)
    async def shared_log(token: str) -> Response:
        if not is_share_token(token):
            return not_found()
        return await _relay(dashboard.api.stream(f"/api/shared/{token}/logs"), "build.log")

    @app.get("/share/{token}/artifact", include_in_schema=False)
    async def shared_artifact(token: str) -> Response:
        if not is_share_token(token):
            return not_found()
        return await _relay(dashboard.api.stream(f"/api/shared/{token}/artifact"), "build.tar.gz")
