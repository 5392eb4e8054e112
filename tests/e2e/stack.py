"""The whole of GoBuild started the way a user starts it (`gobuild dev`), on free ports.

The stack itself lives in `gobuild.platform.localstack` (the benchmarks use it too); here it
pushes GitHub's own push payload example instead of the minimal one.
"""

from __future__ import annotations

import json
from pathlib import Path

from gobuild.platform.localstack import (
    ADMIN_KEY,
    BuilderAgent,
    GitRepo,
    Stack,
    git,
    stack_with_repository,
)
from gobuild.platform.localstack import start_stack as start_local_stack
from tests.conftest import WEBHOOK_FIXTURES

__all__ = [
    "ADMIN_KEY",
    "BuilderAgent",
    "GitRepo",
    "Stack",
    "git",
    "stack_with_repository",
    "start_stack",
]

GITHUB_PUSH = WEBHOOK_FIXTURES / "github" / "push-branch-created.json"


def start_stack(data_dir: Path, build_image: str, **env_overrides: str) -> Stack:
    """`gobuild dev` in `data_dir`; its `push_webhook` sends a real GitHub push payload."""
    payload = json.loads(GITHUB_PUSH.read_text())
    return start_local_stack(data_dir, build_image, push_payload=payload, **env_overrides)
