"""A builder's run of a build, as the builder agent makes it, for tests that need the events its
reporter publishes without running a build."""

from __future__ import annotations

from pathlib import Path

from gobuild.builder_agent.build_run import BuildRun
from gobuild.builder_agent.log_stream import LogStreamer
from gobuild.platform.bus import EventProducer
from gobuild.platform.config import Settings
from gobuild.platform.events import BuildConfig, BuildRequested
from gobuild.platform.records import Build, new_id


def api_build(**fields: object) -> Build:
    """A build of `main` of project p_1 asked for through the API (not recorded anywhere)."""
    values: dict[str, object] = {
        "id": new_id("b_"),
        "project_id": "p_1",
        "source": "api",
        "repo_url": "/srv/site.git",
        "ref": "refs/heads/main",
        "branch": "main",
    }
    return Build.model_validate({**values, **fields})


def builder_run(
    settings: Settings, build: Build, producer: EventProducer, *, attempt: int = 1
) -> BuildRun:
    """Attempt `attempt` of `build` on a builder, past its checkout (the log is not started)."""
    request = BuildRequested(
        build_id=build.id,
        project_id=build.project_id,
        project_name="site",
        number=build.number or 1,
        source=build.source,
        repo_url=build.repo_url,
        ref=build.ref,
        branch=build.branch,
        commit_sha=build.commit_sha,
        production=build.production,
        config=BuildConfig(image="img", timeout_seconds=60, memory_mb=256, cpus=1, pids_limit=64),
    )
    logs = LogStreamer(
        producer, settings, build_id=build.id, project_id=build.project_id, attempt=attempt
    )
    return BuildRun(
        request=request,
        attempt=attempt,
        logs=logs,
        workspace=Path("/nonexistent/workspace"),
        archive=Path("/nonexistent/archive.tar.gz"),
        started=0.0,
        deadline=60.0,
        timeout_seconds=60,
        commit_sha="c" * 40,
    )
