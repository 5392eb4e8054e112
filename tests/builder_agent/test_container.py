"""Build steps in Docker, in a container of their own or exec'd in the build's kept clone
container: streamed output, exit codes, limits, deadline, cancel and clean-up; the image policy
and the build network."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import docker
import pytest

from gobuild.builder_agent.container import (
    ICC_OPTION,
    LABEL_BUILD_ID,
    MAX_LINE_BYTES,
    ContainerError,
    StepResult,
    StepSpec,
    ensure_build_network,
    ensure_image,
    exec_session,
    hand_workspace_to,
    run_step,
    run_step_in,
)
from tests.conftest import BUILD_IMAGE, wait_until


class Console:
    """Collects what a step printed, as the build log would show it."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, str]] = []

    async def __call__(self, stream: str, line: str) -> None:
        self.lines.append((stream, line))

    def of(self, stream: str) -> list[str]:
        return [line for s, line in self.lines if s == stream]

    async def system(self, line: str) -> None:
        self.lines.append(("system", line))


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


Runner = Callable[..., Awaitable[StepResult]]


@pytest.fixture(params=["own container", "clone container"])
def run(request: pytest.FixtureRequest, docker_client: docker.DockerClient) -> Runner:
    """A step run in a container of its own (`run_step`), or exec'd in a running one (the
    build's kept clone container: `run_step_in`), removed with its session afterwards."""

    async def in_own_container(step: StepSpec, **options: Any) -> StepResult:
        return await run_step(docker_client, step, **options)

    async def in_clone_container(step: StepSpec, **options: Any) -> StepResult:
        async with exec_session(docker_client, step) as session:
            return await run_step_in(session, step, **options)

    return in_own_container if request.param == "own container" else in_clone_container


@pytest.fixture
async def workspace(tmp_path: Path) -> Path:
    folder = tmp_path / "ws"
    folder.mkdir()
    await hand_workspace_to(folder, "1000:1000")
    return folder


async def test_stdout_and_stderr_lines_arrive_in_order(
    docker_client: docker.DockerClient, workspace: Path, run: Runner
) -> None:
    console = Console()
    command = (
        "echo one; sleep 0.2; echo two >&2; sleep 0.2; "
        "for i in 1 2 3 4 5; do echo line-$i; done; "
        # A line split across two writes, in the middle of a two-byte UTF-8 character.
        "printf 'caf\\303'; sleep 0.2; printf '\\251 au lait\\n'; printf 'no newline'"
    )
    step = spec(workspace, command)

    result = await run(step, on_line=console)

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
    docker_client: docker.DockerClient, workspace: Path, run: Runner
) -> None:
    console = Console()

    result = await run(spec(workspace, "echo failing >&2; exit 3"), on_line=console)

    assert result.exit_code == 3
    assert not (result.oom_killed or result.timed_out or result.cancelled)
    assert console.of("stderr") == ["failing"]


async def test_step_runs_as_the_build_user_without_privileges_or_docker_socket(
    docker_client: docker.DockerClient, workspace: Path, run: Runner
) -> None:
    console = Console()
    command = (
        'id -u; id -g; echo "$HOME"; grep CapEff /proc/self/status; '
        "test -e /var/run/docker.sock && echo socket || echo no-socket; "
        "echo built > /workspace/out.txt"
    )

    result = await run(spec(workspace, command, env={"HOME": "/tmp"}), on_line=console)

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
    docker_client: docker.DockerClient, workspace: Path, run: Runner
) -> None:
    command = 'python3 -c "b = bytearray(512*1024*1024); print(len(b))"'

    result = await run(spec(workspace, command, memory_mb=64), on_line=Console())

    assert result.oom_killed
    assert result.exit_code == 137


async def test_deadline_kills_the_step_and_removes_the_container(
    docker_client: docker.DockerClient, workspace: Path, run: Runner
) -> None:
    console = Console()
    step = spec(workspace, "echo started; sleep 60")
    loop = asyncio.get_running_loop()
    began = loop.time()

    result = await run(step, on_line=console, deadline=began + 2)

    assert result.timed_out and not result.cancelled
    assert loop.time() - began < 15
    assert console.of("stdout") == ["started"]
    assert containers_labelled(docker_client, step) == []


async def test_cancel_event_kills_the_step(
    docker_client: docker.DockerClient, workspace: Path, run: Runner
) -> None:
    cancel = asyncio.Event()
    step = spec(workspace, "sleep 60")
    asyncio.get_running_loop().call_later(1.5, cancel.set)

    result = await run(step, on_line=Console(), cancel=cancel)

    assert result.cancelled and not result.timed_out
    assert containers_labelled(docker_client, step) == []


async def test_a_step_ends_when_its_command_ends_though_a_process_it_started_runs_on(
    docker_client: docker.DockerClient, workspace: Path, run: Runner
) -> None:
    console = Console()
    # The background process keeps the step's output open.
    step = spec(workspace, "sleep 60 & echo started; exit 4")

    result = await run(step, on_line=console, deadline=asyncio.get_running_loop().time() + 30)

    assert result.exit_code == 4 and not result.timed_out
    assert result.duration_seconds < 10
    assert console.lines == [("stdout", "started")]


async def test_cancelling_the_task_still_removes_the_container(
    docker_client: docker.DockerClient, workspace: Path, run: Runner
) -> None:
    console = Console()
    step = spec(workspace, "echo running; sleep 60")
    task = asyncio.create_task(run(step, on_line=console))
    await wait_until(lambda: console.lines, timeout=10, message="the step never printed")
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


async def test_a_huge_line_is_kept_bounded_and_the_next_line_arrives_whole(
    docker_client: docker.DockerClient, workspace: Path, run: Runner
) -> None:
    console = Console()
    command = "head -c 50000000 /dev/zero | tr '\\0' x; echo; echo next"

    result = await run(spec(workspace, command), on_line=console)

    assert result.exit_code == 0
    assert console.lines == [("stdout", "x" * MAX_LINE_BYTES), ("stdout", "next")]


@pytest.fixture
def tenant_image(docker_client: docker.DockerClient) -> Iterator[str]:
    """Another tenant's image on this builder: here, the build image under another name."""
    name = f"tenant-b/secret:{uuid.uuid4().hex[:8]}"
    repository, tag = name.split(":")
    docker_client.images.get(BUILD_IMAGE).tag(repository, tag)
    yield name
    docker_client.images.remove(name)


async def test_an_untrusted_local_image_is_refused_when_pulling_is_off(
    docker_client: docker.DockerClient, tenant_image: str
) -> None:
    with pytest.raises(ContainerError) as error:
        await ensure_image(
            docker_client,
            tenant_image,
            pull_policy="never",
            timeout=30,
            on_pull=Console().system,
            trusted={BUILD_IMAGE},
        )

    assert str(error.value) == (
        f"image {tenant_image!r} is not trusted on this builder; trusted: {BUILD_IMAGE}"
    )


async def test_an_untrusted_local_image_is_pulled_fresh_never_used_as_it_is(
    docker_client: docker.DockerClient, tenant_image: str
) -> None:
    console = Console()

    # The registry has no such image (or is out of reach): the local copy is not a fallback.
    with pytest.raises(ContainerError, match="could not be pulled from its registry"):
        await ensure_image(
            docker_client,
            tenant_image,
            pull_policy="missing",
            timeout=60,
            on_pull=console.system,
            trusted={BUILD_IMAGE},
        )

    assert console.of("system") == [
        f"Pulling image {tenant_image} from its registry (only trusted images are used from "
        "this builder's local copies)"
    ]


async def test_a_trusted_image_is_used_from_the_local_copy_however_it_is_spelled(
    docker_client: docker.DockerClient,
) -> None:
    console = Console()

    image = await ensure_image(
        docker_client,
        f"docker.io/{BUILD_IMAGE}",
        pull_policy="never",
        timeout=30,
        on_pull=console.system,
        trusted={BUILD_IMAGE},
    )

    assert image == f"docker.io/{BUILD_IMAGE}"
    assert console.lines == []


async def test_the_build_network_is_created_once_with_inter_container_traffic_off(
    docker_client: docker.DockerClient,
) -> None:
    name = f"gobuild-test-builds-{uuid.uuid4().hex[:8]}"
    try:
        await ensure_build_network(docker_client, name)
        await ensure_build_network(docker_client, name)  # a second builder start

        networks = [n for n in docker_client.networks.list(names=[name]) if n.name == name]
        assert len(networks) == 1
        network = networks[0]
        assert network.attrs["Driver"] == "bridge"
        assert network.attrs["Options"][ICC_OPTION] == "false"
        assert network.attrs["Internal"] is False  # builds reach the package registries
    finally:
        for network in docker_client.networks.list(names=[name]):
            network.remove()
