"""The identifiers storage accepts in paths: build ids and deployment ids (DNS labels).

Both end up as file and folder names, so they are checked before any path is built;
the `require_*` functions turn a bad one into a 400 for the client.
"""

from __future__ import annotations

import re

from gobuild.platform.api_errors import ApiError

BUILD_ID_PATTERN = re.compile(r"[a-z0-9_-]{1,64}")
DEPLOYMENT_ID_PATTERN = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")


def is_valid_build_id(value: str) -> bool:
    return BUILD_ID_PATTERN.fullmatch(value) is not None


def is_valid_deployment_id(value: str) -> bool:
    return DEPLOYMENT_ID_PATTERN.fullmatch(value) is not None


def require_build_id(build_id: str) -> None:
    if not is_valid_build_id(build_id):
        raise ApiError(400, "invalid build id", f"build id must match {BUILD_ID_PATTERN.pattern}")


def require_deployment_id(deployment_id: str) -> None:
    if not is_valid_deployment_id(deployment_id):
        raise ApiError(
            400,
            "invalid deployment id",
            f"deployment id must be a DNS label matching {DEPLOYMENT_ID_PATTERN.pattern}",
        )
