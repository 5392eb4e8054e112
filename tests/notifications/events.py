"""Events of one build as the builders and the orchestrator publish them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from gobuild.platform.build_state import BuildState
from gobuild.platform.events import (
    BuildCompleted,
    BuildStatusChanged,
    DeploymentStatusChanged,
    LogChunk,
)
from gobuild.platform.records import new_id
from tests.notifications.conftest import SHA


@dataclass
class BuildEvents:
    """Makes the events of one build of `project_id`."""

    project_id: str
    number: int = 3
    build_id: str = field(default_factory=lambda: new_id("b_"))
    commit_sha: str = SHA

    def status(self, state: BuildState, **fields: Any) -> BuildStatusChanged:
        return BuildStatusChanged(
            build_id=self.build_id,
            project_id=self.project_id,
            state=state,
            number=self.number,
            commit_sha=self.commit_sha,
            builder_id="builder-1" if state != BuildState.QUEUED else None,
            **fields,
        )

    def completed(self, state: BuildState, **fields: Any) -> BuildCompleted:
        return BuildCompleted(
            build_id=self.build_id,
            project_id=self.project_id,
            state=state,
            duration_seconds=4.2,
            commit_sha=self.commit_sha,
            builder_id="builder-1",
            **fields,
        )

    def log(self, seq: int, *lines: str) -> LogChunk:
        return LogChunk(
            build_id=self.build_id,
            project_id=self.project_id,
            seq=seq,
            stream="stdout",
            lines=list(lines),
        )

    def deployment(self, state: str, url: str) -> DeploymentStatusChanged:
        return DeploymentStatusChanged(
            deployment_id=new_id("d_"),
            build_id=self.build_id,
            project_id=self.project_id,
            state=state,  # type: ignore[arg-type]
            url=url,
        )
