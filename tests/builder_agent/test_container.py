"""Build steps in Docker: streamed output, exit codes, limits, deadline, cancel and clean-up."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import docker
import pytest

from gobuild.builder_agent.container import (
    LABEL_BUILD_ID,
    ContainerError,
    StepResult,
    StepSpec,
    ensure_image,
    hand_workspace_to,
    run_step,
)
from tests.conftest import BUILD_IMAGE


class Console:
    """Collects what a step printed, as the build log would show it."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, str]] = []

    async def __call__(self, stream: str, line: str) -> None:
        self.lines.append((stream, line))

    def of(self, stream: str) -> list[str]:
        return [line for s, line in self.lines if s == stream]


def spec(workspace: Path, command: str, **overrides: object) -> StepSpec:
    values: dict[str, object] = {
        "image": BUILD_IMAGE,
        "command": command,
        "workspace": workspace,
        "memory_mb": 256,
        "cpus": 1.0,
        "pids_limit": 128,
        "labels": {LABEL_BUILD_ID: f"b_test{uuid.uuid4().hex[:12]}"},
        "network": "none",
    }
    values.update(overrides)
    return StepSpec(**values)  # type: ignore[arg-type]


def containers_labelled(client: docker.DockerClient, step: StepSpec) -> list[object]:
    label = f"{LABEL_BUILD_ID}={step.labels[LABEL_BUILD_ID]}"
    return client.containers.list(all=True, filters={"label": label})


@pytest.fixture
async def workspace(tmp_path: Path) -> Path:
    folder = tmp_path / "ws"
    folder.mkdir()
    await hand_workspace_to(folder, "1000:1000")
    return folder


async def test_stdout_and_stderr_lines_arrive_in_order(
    docker_client: docker.DockerClient, workspace: Path
) -> None:
    console = Console()
    command = (
        "echo one; sleep 0.2; echo two >&2; sleep 0.2; "
        "for i in 1 2 3 4 5; do echo line-$i; done; "
        # A line split across two writes, in the middle of a two-byte UTF-8 character.
        "printf 'caf\\303'; sleep 0.2; printf '\\251 au lait\\n'; printf 'no newline'"
    )
    step = spec(workspace, command)

    result = await run_step(docker_client, step, on_line=console)

    assert result == StepResult(exit_code=0, duration_seconds=result.duration_seconds)
    assert console.lines == [
        ("stdout", "one"),
        ("stderr", "two"),
        *[("stdout", f"line-{i}") for i in range(1, 6)],
        ("stdout", "café au lait"),
        ("stdout", "no newline"),
    ]
    assert containers_labelled(docker_client, step) == []


async def test_non_zero_exit_code_is_reported(
    docker_client: docker.DockerClient, workspace: Path
) -> None:
    console = Console()

    result = await run_step(
        docker_client, spec(workspace, "echo failing >&2; exit 3"), on_line=console
    )

    assert result.exit_code == 3
    assert not (result.oom_killed or result.timed_out or result.cancelled)
    assert console.of("stderr") == ["failing"]


async def test_step_runs_as_the_build_user_without_privileges_or_docker_socket(
    docker_client: docker.DockerClient, workspace: Path
) -> None:
    console = Console()
    command = (
        'id -u; id -g; echo "$HOME"; grep CapEff /proc/self/status; '
        "test -e /var/run/docker.sock && echo socket || echo no-socket; "
        "echo built > /workspace/out.txt"
    )

    result = await run_step(
        docker_client, spec(workspace, command, env={"HOME": "/tmp"}), on_line=console
    )

    assert result.exit_code == 0
    assert console.of("stdout") == [
        "1000",
        "1000",
        "/tmp",
        "CapEff:\t0000000000000000",
        "no-socket",
    ]
    assert (workspace / "out.txt").read_text() == "built\n"


async def test_memory_limit_exceeded_is_reported_as_oom(
    docker_client: docker.DockerClient, workspace: Path
) -> None:
    command = 'python3 -c "b = bytearray(512*1024*1024); print(len(b))"'

    result = await run_step(
        docker_client, spec(workspace, command, memory_mb=64), on_line=Console()
    )

    assert result.oom_killed
    assert result.exit_code == 137


async def test_deadline_kills_the_step_and_removes_the_container(
    docker_client: docker.DockerClient, workspace: Path
) -> None:
    console = Console()
    step = spec(workspace, "echo started; sleep 60")
    loop = asyncio.get_running_loop()
    began = loop.time()

    result = await run_step(docker_client, step, on_line=console, deadline=began + 2)

    assert result.timed_out and not result.cancelled
    assert loop.time() - began < 15
    assert console.of("stdout") == ["started"]
    assert containers_labelled(docker_client, step) == []


async def test_cancel_event_kills_the_step(
    docker_client: docker.DockerClient, workspace: Path
) -> None:
    cancel = asyncio.Event()
    step = spec(workspace, "sleep 60")
    asyncio.get_running_loop().call_later(1.5, cancel.set)

    result = await run_step(docker_client, step, on_line=Console(), cancel=cancel)

    assert result.cancelled and not result.timed_out
    assert containers_labelled(docker_client, step) == []


async def test_cancelling_the_task_still_removes_the_container(
    docker_client: docker.DockerClient, workspace: Path
) -> None:
    console = Console()
    step = spec(workspace, "echo running; sleep 60")
    task = asyncio.create_task(run_step(docker_client, step, on_line=console))
    for _ in range(100):
        if console.lines:
            break
        await asyncio.sleep(0.1)
    assert console.lines == [("stdout", "running")]

    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    assert containers_labelled(docker_client, step) == []


async def test_a_missing_image_is_pulled_and_an_unpullable_one_is_a_clear_error(
    docker_client: docker.DockerClient,
) -> None:
    pulls: list[str] = []

    async def on_pull(line: str) -> None:
        pulls.append(line)

    await ensure_image(
        docker_client, BUILD_IMAGE, pull_policy="missing", timeout=30, on_pull=on_pull
    )
    assert pulls == []  # present: nothing to pull
    # No registry is reachable from this machine, so the pull itself fails, with its reason.
    with pytest.raises(ContainerError, match="could not be pulled"):
        await ensure_image(
            docker_client,
            "gobuild/does-not-exist:1",
            pull_policy="missing",
            timeout=30,
            on_pull=on_pull,
        )
    assert pulls == ["Pulling image gobuild/does-not-exist:1"]
    with pytest.raises(ContainerError, match="pulling is off"):
        await ensure_image(
            docker_client,
            "gobuild/does-not-exist:1",
            pull_policy="never",
            timeout=30,
            on_pull=on_pull,
        )


async def test_missing_image_is_a_clear_error_and_nothing_is_pulled(
    docker_client: docker.DockerClient, workspace: Path
) -> None:
    step = spec(workspace, "true", image="gobuild/does-not-exist:latest")

    with pytest.raises(ContainerError, match="is not available on this builder"):
        await run_step(docker_client, step, on_line=Console())

    assert containers_labelled(docker_client, step) == []
