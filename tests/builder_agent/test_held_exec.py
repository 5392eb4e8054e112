"""A checkout in a container kept for the steps holds on for the first step in its own exec:
the step gets exactly the environment a fresh exec would give it (none of the checkout's,
which carries the repository's credentials), its values pass as data, never as shell, and a
held checkout let go runs nothing. Real containers and a real checkout of a local repository."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import docker
import pytest

from gobuild.builder_agent.checkout import checkout_with_facts
from gobuild.builder_agent.container import (
    ExecSession,
    PendingRemovals,
    StepSpec,
    Stream,
    run_step_in,
)
from gobuild.builder_agent.held_exec import HELD_NO_STEP
from gobuild.platform.localstack import GitRepo
from tests.builder_agent.local_remote import BUILD_USER, local_remote
from tests.conftest import BUILD_IMAGE

pytestmark = pytest.mark.timeout(120)

# Printed by a step: its whole environment, sorted, one variable a line (values may span lines).
SHOW_ENV = "env -0 | sort -z | tr '\\0' '\\n'; echo; pwd; id -u"
# What a shell adds to the environment of the commands it starts by itself.
SHELL_OWN = ("PWD=", "OLDPWD=", "SHLVL=", "_=")


@pytest.fixture
async def session(
    git_repo: GitRepo, docker_client: docker.DockerClient, tmp_path: Path
) -> AsyncIterator[ExecSession]:
    """A kept clone container after a checkout asked to hold on for the first step."""
    sha = git_repo.commit({"index.html": "<h1>hi</h1>", "sub/readme": "x"})
    remote = await local_remote(git_repo, docker_client)
    kept: list[ExecSession] = []
    workspace = tmp_path / "workspace"
    await checkout_with_facts(
        remote,
        workspace,
        commit_sha=sha,
        ref=None,
        branch=None,
        timeout=60,
        keep=kept.append,
        hold=True,
    )
    removals = PendingRemovals()
    try:
        yield kept[0]
    finally:
        kept[0].release(removals)
        await removals.wait()


def step(session: ExecSession, command: str, **changes: object) -> StepSpec:
    values: dict[str, object] = {
        "image": BUILD_IMAGE,
        "command": command,
        "workspace": Path("/unused"),
        "env": {"HOME": "/tmp", "CI": "true", "GOBUILD_BUILD_ID": "b_1"},
        "user": BUILD_USER,
    }
    values.update(changes)
    return StepSpec(**values)  # type: ignore[arg-type]


async def run(session: ExecSession, spec: StepSpec) -> tuple[int | None, str]:
    lines: list[str] = []

    async def on_line(stream: Stream, line: str) -> None:
        lines.append(line)

    result = await run_step_in(session, spec, on_line=on_line)
    return result.exit_code, "\n".join(lines)


def environment(shown: str) -> list[str]:
    variables = shown.split("\n\n")[0].splitlines()
    return [v for v in variables if not v.startswith(SHELL_OWN)]


async def test_the_first_step_runs_in_the_checkouts_exec_with_a_fresh_execs_environment(
    session: ExecSession, docker_client: docker.DockerClient
) -> None:
    held = session.held
    assert held is not None
    spec = step(session, SHOW_ENV + "; exit 7")

    code, shown = await run(session, spec)

    assert code == 7, shown
    # It ran in the checkout's exec, which has ended with the step's code.
    assert docker_client.api.exec_inspect(held.exec_id)["ExitCode"] == 7
    assert session.held is None
    # The same step exec'd afresh (as every later step is) sees the very same environment.
    again, fresh = await run(session, spec)
    assert again == 7
    assert environment(shown) == environment(fresh)
    assert not [v for v in environment(shown) if v.startswith(("GOBUILD_URL", "GIT_", "gobuild"))]
    assert shown.splitlines()[-2:] == ["/workspace", "1000"]


async def test_values_pass_as_data_and_the_step_runs_in_its_folder(session: ExecSession) -> None:
    tricky = "two words\nand a line $(touch /tmp/pwned) `id` ' \" \\ ; exit 3"
    spec = step(
        session,
        'printf "%s|" "$TRICKY" "$EMPTY"; pwd; test ! -e /tmp/pwned && echo clean',
        env={"TRICKY": tricky, "EMPTY": ""},
        workdir="/workspace/sub",
    )

    code, shown = await run(session, spec)

    assert code == 0, shown
    assert shown == f"{tricky}||/workspace/sub\nclean"


async def test_nothing_of_the_checkout_is_left_running_with_its_environment(
    session: ExecSession,
) -> None:
    # Every process the build user can see: none has the checkout's variables any more.
    look = "grep -l GOBUILD_URL /proc/[0-9]*/environ 2>/dev/null; echo done"
    code, shown = await run(session, step(session, look))
    assert (code, shown) == (0, "done")


async def test_a_held_checkout_let_go_runs_nothing(
    session: ExecSession, docker_client: docker.DockerClient
) -> None:
    held = session.held
    assert held is not None
    session.forget_held()
    for _ in range(100):
        details = docker_client.api.exec_inspect(held.exec_id)
        if not details["Running"]:
            break
        await asyncio.sleep(0.05)
    assert (details["Running"], details["ExitCode"]) == (False, HELD_NO_STEP)
    # The next step is exec'd the usual way.
    code, shown = await run(session, step(session, "echo fresh"))
    assert (code, shown) == (0, "fresh")


async def test_a_step_of_another_user_is_exec_d_the_usual_way_once_the_checkout_ended(
    session: ExecSession,
) -> None:
    # The other user is root here, who could read the checkout's environment if it still ran.
    look = "grep -l GOBUILD_URL /proc/[0-9]*/environ 2>/dev/null; id -u"
    code, shown = await run(session, step(session, look, user="0:0"))
    assert (code, shown) == (0, "0")
    assert session.held is None
