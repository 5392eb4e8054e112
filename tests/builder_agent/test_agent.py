"""The builder agent end to end: a build job in, events, an artifact and a deployment out.

Real broker, Redis, Docker, git and the storage service (served by hypercorn) take part.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import docker
import docker.errors
import httpx
import pytest
import redis.asyncio as aioredis
from aiokafka import TopicPartition
from hypercorn.asyncio import serve
from hypercorn.config import Config

from gobuild.builder_agent.agent import Agent, consumer_group
from gobuild.builder_agent.container import LABEL_BUILD_ID, LABEL_STEP
from gobuild.builder_agent.warm_containers import FOLDER_PREFIX, KEEPER_SUFFIX, LABEL_WARM
from gobuild.platform.build_state import BuildState
from gobuild.platform.bus import EventProducer, decode_record, make_consumer, wait_for_topics
from gobuild.platform.config import Settings
from gobuild.platform.events import (
    TOPIC_BUILD_COMPLETIONS,
    TOPIC_BUILD_LOGS,
    TOPIC_BUILD_REQUESTS,
    TOPIC_BUILD_STATUS,
    TOPIC_DEPLOYMENT_STATUS,
    BuildCompleted,
    BuildConfig,
    BuildRequested,
    BuildStatusChanged,
    BuildTriggered,
    DeploymentStatusChanged,
    Event,
    LogChunk,
)
from gobuild.platform.records import Build, Project, new_id
from gobuild.platform.storage.app import create_app
from gobuild.platform.stores.build_queue import BuildQueue
from gobuild.platform.stores.builds import BuildStore
from gobuild.platform.stores.claims import BuilderFleet
from gobuild.platform.stores.deployment_records import DeploymentRecords
from gobuild.platform.stores.keys import key_build_claim, key_builder_heartbeat
from gobuild.platform.stores.outbox import PendingResult, ResultOutbox
from gobuild.platform.stores.projects import ProjectStore
from gobuild.platform.waiting import wait_within
from tests.conftest import BUILD_IMAGE, GitRepo, wait_until


@dataclass
class Stack:
    settings: Settings
    redis: aioredis.Redis
    producer: EventProducer
    storage: httpx.AsyncClient


@dataclass
class Observed:
    """Everything published about one build, in order per topic."""

    statuses: list[BuildStatusChanged] = field(default_factory=list)
    completions: list[BuildCompleted] = field(default_factory=list)
    deployments: list[DeploymentStatusChanged] = field(default_factory=list)
    logs: list[LogChunk] = field(default_factory=list)

    @property
    def log_lines(self) -> list[tuple[str, str]]:
        return [(chunk.stream, line) for chunk in self.logs for line in chunk.lines]

    @property
    def steps(self) -> list[str]:
        return [s.step for s in self.statuses if s.step]


@pytest.fixture
async def stack(
    kafka_bootstrap: str,
    redis_url: str,
    redis: aioredis.Redis,
    producer: EventProducer,
    make_settings: Callable[..., Settings],
) -> AsyncIterator[Stack]:
    settings = make_settings(
        kafka_bootstrap=kafka_bootstrap,
        redis_url=redis_url,
        builder_id="test-builder",
        build_network="none",
        build_memory_mb=512,
        log_flush_interval_ms=20,
        internal_token="internal-secret",
        allow_local_repos=True,
    )
    await wait_for_topics(settings)
    config = Config()
    config.bind = [f"127.0.0.1:{settings.storage_port}"]
    config.accesslog = None
    stopped = asyncio.Event()
    server = asyncio.create_task(
        serve(create_app(settings, consume_logs=False), config, shutdown_trigger=stopped.wait)
    )
    headers = {"X-GoBuild-Internal-Token": settings.internal_token}
    async with httpx.AsyncClient(base_url=settings.storage_url, headers=headers) as storage:

        async def healthy() -> bool:
            try:
                return (await storage.get("/healthz")).status_code == 200
            except httpx.TransportError:
                return False

        try:
            await wait_until(healthy, timeout=20, message="storage never answered /healthz")
            yield Stack(settings, redis, producer, storage)
        finally:
            stopped.set()
            await server


async def request_build(
    stack: Stack,
    repo: GitRepo,
    sha: str,
    *,
    production: bool = True,
    timeout: int = 120,
    build_id: str | None = None,
    project_id: str | None = None,
    builder_id: str | None = None,
) -> BuildRequested:
    """Record a project and a dispatched build in Redis, give it to the builder (the
    scheduler's assignment) and publish its job for that builder."""
    builder_id = builder_id or stack.settings.builder_id
    project = Project(
        id=project_id or new_id("p_"),
        name=f"site-{uuid.uuid4().hex[:6]}",
        repo_url=str(repo.bare),
        provider="git",
        webhook_secret="whsec",
        trusted_source=True,  # a local path: registered by an admin
    )
    projects = ProjectStore(stack.redis)
    known = await projects.get(project.id)
    if known is None:
        assert await projects.create(project)
    else:  # another build of it
        project = known
    build = Build(
        id=build_id or new_id("b_"),
        project_id=project.id,
        source="api",
        repo_url=project.repo_url,
        ref="refs/heads/main",
        branch="main",
        commit_sha=sha,
        production=production,
    )
    trigger = BuildTriggered(
        build_id=build.id,
        project_id=project.id,
        source="api",
        repo_url=build.repo_url,
        ref=build.ref,
        branch=build.branch,
        commit_sha=sha,
    )
    builds = BuildStore(stack.redis)
    await builds.record_trigger(build, trigger)
    await builds.apply_status(
        BuildStatusChanged(
            build_id=build.id, project_id=project.id, state=BuildState.DISPATCHED, number=1
        )
    )
    request = BuildRequested(
        build_id=build.id,
        project_id=project.id,
        project_name=project.name,
        number=1,
        source=build.source,
        repo_url=build.repo_url,
        ref=build.ref,
        branch=build.branch,
        commit_sha=sha,
        production=production,
        config=BuildConfig(
            image=BUILD_IMAGE, timeout_seconds=timeout, memory_mb=512, cpus=1.0, pids_limit=256
        ),
        trusted_source=project.trusted_source,
        builder_id=builder_id,
    )
    await give(stack, build.id, builder_id)
    await stack.producer.publish(TOPIC_BUILD_REQUESTS, request)
    return request


async def give(stack: Stack, build_id: str, builder_id: str, attempt: int = 1) -> None:
    """The scheduler's assignment of the build to the builder (taking it from any other)."""
    queue = BuildQueue(stack.redis)
    await queue.requeue(build_id, 0.0, attempt=attempt)
    assert await queue.assign(build_id, builder_id, 10, attempt)


async def wait_until_ready(stack: Stack, builder_id: str) -> None:
    """The builder beats: it hears its jobs (the scheduler gives jobs only then)."""

    async def beating() -> bool:
        return bool(await stack.redis.exists(key_builder_heartbeat(builder_id)))

    await wait_until(beating, timeout=60, message=f"builder {builder_id} never became ready")


async def observe(
    stack: Stack, build_id: str, timeout: float = 90, *, until_terminal: bool = True
) -> Observed:
    """Read the build's events until its terminal status, its completion and its final log
    chunk arrived (topics are read in no particular order between them), then whatever else
    comes within half a second. With `until_terminal=False`, read until a second passes idle."""
    topics = [
        TOPIC_BUILD_STATUS,
        TOPIC_BUILD_COMPLETIONS,
        TOPIC_DEPLOYMENT_STATUS,
        TOPIC_BUILD_LOGS,
    ]
    consumer = make_consumer(stack.settings, topics, None, client_id="test-observer")
    await consumer.start()
    seen = Observed()
    results: set[str] = set()

    def finished() -> bool:
        return (
            bool(seen.statuses)
            and seen.statuses[-1].state.is_terminal
            and bool(seen.completions)
            and bool(seen.logs)
            and seen.logs[-1].final
        )

    try:
        async with asyncio.timeout(timeout):
            while True:
                idle = 0.5 if finished() else None if until_terminal else 1.0
                try:
                    record = await asyncio.wait_for(consumer.getone(), idle)
                except TimeoutError:
                    break
                event: Event | None = decode_record(record)
                if getattr(event, "build_id", None) != build_id:
                    continue
                if isinstance(event, BuildStatusChanged | BuildCompleted):
                    # The outbox publishes a result again until an orchestrator applies it
                    # (none runs here): the same event, which consumers take once.
                    if event.event_id in results:
                        continue
                    results.add(event.event_id)
                if isinstance(event, BuildStatusChanged):
                    seen.statuses.append(event)
                elif isinstance(event, BuildCompleted):
                    seen.completions.append(event)
                elif isinstance(event, DeploymentStatusChanged):
                    seen.deployments.append(event)
                elif isinstance(event, LogChunk):
                    seen.logs.append(event)
    finally:
        await consumer.stop()
    return seen


async def wait_for_log_line(stack: Stack, build_id: str, wanted: tuple[str, str]) -> None:
    consumer = make_consumer(stack.settings, [TOPIC_BUILD_LOGS], None, client_id="test-tail")
    await consumer.start()
    try:
        async with asyncio.timeout(60):
            while True:
                chunk = decode_record(await consumer.getone())
                if (
                    isinstance(chunk, LogChunk)
                    and chunk.build_id == build_id
                    and wanted in [(chunk.stream, line) for line in chunk.lines]
                ):
                    return
    finally:
        await consumer.stop()


@contextlib.asynccontextmanager
async def running_agent(
    stack: Stack, settings: Settings, *, ready: bool = True
) -> AsyncIterator[Agent]:
    """An agent with `settings`, running until the block ends; the block begins once it is
    ready, unless `ready` is False."""
    agent = Agent(settings)
    task = asyncio.create_task(agent.run())
    try:
        if ready:
            await wait_until_ready(stack, agent.builder_id)
        yield agent
    finally:
        agent.request_stop()
        await asyncio.wait_for(task, 60)


@pytest.fixture
async def agent(stack: Stack) -> AsyncIterator[Agent]:
    async with running_agent(stack, stack.settings) as agent:
        yield agent


def leftover_containers(client: docker.DockerClient, build_id: str) -> list[object]:
    return client.containers.list(all=True, filters={"label": f"{LABEL_BUILD_ID}={build_id}"})


async def workspace_entries(settings: Settings, *, within: float = 10.0) -> list[Path]:
    """What finished builds left in the workspaces folder: anything but a warm container's
    folders, and what is in its workspace once it was given back (in the background, so this
    waits up to `within` seconds for them to be empty). Its keeper's folder holds a report."""
    deadline = time.monotonic() + within
    while True:
        left = []
        for entry in settings.workspaces_dir.iterdir():
            warm = entry.name.startswith(FOLDER_PREFIX) and entry.is_dir()
            if warm and entry.name.endswith(KEEPER_SUFFIX):
                left.extend(e for e in entry.iterdir() if e.name != "status")
                continue
            left.extend(entry.iterdir() if warm else [entry])
        if not left or time.monotonic() > deadline:
            return left
        await asyncio.sleep(0.1)


SITE_CONFIG = """
install = "echo installing"
build = '''mkdir -p dist/assets && echo "<h1>built $GOBUILD_COMMIT_SHA on $GOBUILD_BRANCH</h1>" \
> dist/index.html && echo "body{}" > dist/assets/site.css && echo built'''
output = "dist"
"""


async def test_successful_build_is_deployed_and_promoted(
    stack: Stack, agent: Agent, git_repo: GitRepo, docker_client: docker.DockerClient
) -> None:
    sha = git_repo.commit({"gobuild.toml": SITE_CONFIG, "src.txt": "source"})
    request = await request_build(stack, git_repo, sha)

    seen = await observe(stack, request.build_id)

    assert seen.statuses[0].state == BuildState.RUNNING
    assert seen.statuses[0].builder_id == "test-builder"
    assert seen.steps == ["checkout", "install", "build", "upload", "deploy"]
    assert seen.statuses[-1].state == BuildState.SUCCEEDED

    [completion] = seen.completions
    assert completion.state == BuildState.SUCCEEDED
    assert completion.commit_sha == sha
    assert completion.error is None
    assert completion.artifact is not None
    meta = (await stack.storage.get(f"/artifacts/{request.build_id}/meta")).json()
    assert meta["sha256"] == completion.artifact.sha256
    assert meta["size"] == completion.artifact.size

    deployment_id = completion.deployment_id
    assert deployment_id is not None and deployment_id.startswith(request.project_name + "-")
    assert completion.deployment_url == stack.settings.deployment_url(deployment_id)
    assert [(d.state, d.deployment_id) for d in seen.deployments] == [
        ("created", deployment_id),
        ("ready", deployment_id),
        ("promoted", deployment_id),
    ]
    assert seen.deployments[-1].alias_url == stack.settings.deployment_url(request.project_name)

    page = await stack.storage.get(f"/deployments/{deployment_id}/files/index.html")
    assert page.status_code == 200
    assert page.text == f"<h1>built {sha} on main</h1>\n"
    css = await stack.storage.get(f"/deployments/{deployment_id}/files/assets/site.css")
    assert css.text == "body{}\n"

    stored = await DeploymentRecords(stack.redis).get(deployment_id)
    assert stored is not None and stored.build_id == request.build_id
    alias = await DeploymentRecords(stack.redis).production_alias(request.project_id)
    assert alias is not None and alias.deployment_id == deployment_id

    lines = seen.log_lines
    assert ("system", "$ echo installing") in lines
    assert ("stdout", "installing") in lines
    assert ("stdout", "built") in lines
    assert lines[-1][0] == "system" and lines[-1][1].startswith("Build succeeded in ")
    assert [chunk.seq for chunk in seen.logs] == list(range(len(seen.logs)))
    assert seen.logs[-1].final
    assert leftover_containers(docker_client, request.build_id) == []
    assert await workspace_entries(stack.settings) == []


async def test_static_site_without_steps_is_deployed_as_is(
    stack: Stack, agent: Agent, git_repo: GitRepo
) -> None:
    sha = git_repo.commit({"index.html": "<p>static</p>", "css/a.css": "a{}"})
    request = await request_build(stack, git_repo, sha, production=False)

    seen = await observe(stack, request.build_id)

    [completion] = seen.completions
    assert completion.state == BuildState.SUCCEEDED
    assert [d.state for d in seen.deployments] == ["created", "ready"]
    page = await stack.storage.get(f"/deployments/{completion.deployment_id}/files/index.html")
    assert page.text == "<p>static</p>"
    git_folder = await stack.storage.get(f"/deployments/{completion.deployment_id}/files/.git/HEAD")
    assert git_folder.status_code == 404


async def test_failing_step_fails_the_build_without_a_deployment(
    stack: Stack, agent: Agent, git_repo: GitRepo, docker_client: docker.DockerClient
) -> None:
    config = 'build = "echo compiling; echo \'error: syntax\' >&2; exit 2"\noutput = "dist"\n'
    sha = git_repo.commit({"gobuild.toml": config})
    request = await request_build(stack, git_repo, sha)

    seen = await observe(stack, request.build_id)

    [completion] = seen.completions
    assert completion.state == BuildState.FAILED
    assert completion.error == "step 'build' exited with code 2"
    assert completion.deployment_id is None and completion.artifact is None
    assert seen.statuses[-1].state == BuildState.FAILED
    assert seen.statuses[-1].reason == "step 'build' exited with code 2"
    assert seen.deployments == []
    assert ("stderr", "error: syntax") in seen.log_lines
    assert seen.log_lines[-1] == ("system", "Build failed: step 'build' exited with code 2")
    missing = await stack.storage.get(f"/artifacts/{request.build_id}/meta")
    assert missing.status_code == 404
    assert leftover_containers(docker_client, request.build_id) == []
    assert await workspace_entries(stack.settings) == []


async def test_missing_output_folder_fails_the_build_naming_it(
    stack: Stack, agent: Agent, git_repo: GitRepo
) -> None:
    sha = git_repo.commit({"gobuild.toml": 'build = "echo nothing"\noutput = "dist"\n'})
    request = await request_build(stack, git_repo, sha)

    seen = await observe(stack, request.build_id)

    [completion] = seen.completions
    assert completion.state == BuildState.FAILED
    assert completion.error == "output folder 'dist' not found"


async def test_invalid_repository_config_fails_the_build_with_its_message(
    stack: Stack, agent: Agent, git_repo: GitRepo
) -> None:
    sha = git_repo.commit({"gobuild.toml": 'output = "../../etc"\n'})
    request = await request_build(stack, git_repo, sha)

    seen = await observe(stack, request.build_id)

    [completion] = seen.completions
    assert completion.state == BuildState.FAILED
    assert completion.error == "gobuild.toml: 'output' must not contain '..'"
    assert ("system", "Build failed: gobuild.toml: 'output' must not contain '..'") in (
        seen.log_lines
    )


async def test_build_over_its_time_limit_times_out_and_leaves_no_container(
    stack: Stack, agent: Agent, git_repo: GitRepo, docker_client: docker.DockerClient
) -> None:
    sha = git_repo.commit({"gobuild.toml": 'build = "echo start; sleep 60"\ntimeout = 3\n'})
    request = await request_build(stack, git_repo, sha)

    seen = await observe(stack, request.build_id)

    [completion] = seen.completions
    assert completion.state == BuildState.TIMED_OUT
    assert completion.error == "timed out after 3 s"
    assert completion.duration_seconds < 30
    assert seen.statuses[-1].state == BuildState.TIMED_OUT
    assert ("stdout", "start") in seen.log_lines
    assert leftover_containers(docker_client, request.build_id) == []
    assert await workspace_entries(stack.settings) == []


async def test_cancel_request_stops_the_running_build(
    stack: Stack, agent: Agent, git_repo: GitRepo, docker_client: docker.DockerClient
) -> None:
    sha = git_repo.commit({"gobuild.toml": 'build = "echo waiting; sleep 60"\n'})
    request = await request_build(stack, git_repo, sha)
    await wait_for_log_line(stack, request.build_id, ("stdout", "waiting"))
    await BuildStore(stack.redis).request_cancel(request.build_id)

    seen = await observe(stack, request.build_id)

    [completion] = seen.completions
    assert completion.state == BuildState.CANCELLED
    assert seen.statuses[-1].state == BuildState.CANCELLED
    assert seen.deployments == []
    assert leftover_containers(docker_client, request.build_id) == []


def created_steps(client: docker.DockerClient, label: str, since: float) -> list[str]:
    """The `gobuild.step` label of each container Docker created with `label` (`name=value`:
    a build's, or a project's warm ones) since `since`, in order."""
    events = client.events(
        since=int(since) - 1,
        until=int(time.time()) + 1,
        filters={"type": "container", "event": "create", "label": label},
        decode=True,
    )
    return [event["Actor"]["Attributes"].get(LABEL_STEP, "") for event in events]


TWO_STEPS = """
install = "echo installed > /tmp/installed"
build = "mkdir -p dist && cat /tmp/installed > dist/index.html"
output = "dist"
"""


async def test_the_steps_run_in_the_clone_container_one_container_a_build(
    stack: Stack, agent: Agent, git_repo: GitRepo, docker_client: docker.DockerClient
) -> None:
    since = time.time()
    sha = git_repo.commit({"gobuild.toml": TWO_STEPS})
    request = await request_build(stack, git_repo, sha)

    seen = await observe(stack, request.build_id)

    # The build step read what the install step left in the container's /tmp.
    assert [c.state for c in seen.completions] == [BuildState.SUCCEEDED], seen.log_lines
    # A warm container (kept for the project's next build) is labelled with the project.
    assert created_steps(docker_client, f"{LABEL_BUILD_ID}={request.build_id}", since) == []
    assert created_steps(docker_client, f"{LABEL_WARM}={request.project_id}", since) == ["checkout"]
    assert leftover_containers(docker_client, request.build_id) == []


# Fails unless it runs in a container as good as new: nothing an earlier build left in /tmp,
# /dev/shm or the workspace, and no process of it (a copy of `sleep`, named so that no command
# line but its own matches), then leaves all three behind.
LEAVES_TRACES = r"""
build = '''n=gobuild-left; test ! -e /tmp/mark && test ! -e /dev/shm/mark && test ! -e trace \
  && ! grep -qs "gobuild-leftove[r]" /proc/[0-9]*/cmdline \
  && touch /tmp/mark /dev/shm/mark trace && cp /bin/sleep /tmp/${n}over \
  && (/tmp/${n}over 300 > /dev/null 2>&1 &) \
  && ! kill -9 1 2> /dev/null && mkdir -p dist && echo ok > dist/index.html'''
output = "dist"
"""


async def build_and_settle(
    stack: Stack, agent: Agent, repo: GitRepo, sha: str, project_id: str
) -> Observed:
    """One build of the project, observed, then its warm container given back."""
    request = await request_build(stack, repo, sha, project_id=project_id)
    seen = await observe(stack, request.build_id)
    assert agent.warm_containers is not None
    await wait_within(agent.warm_containers.settled(), 30)
    return seen


async def test_the_next_build_of_a_project_runs_in_its_warm_container_as_good_as_new(
    stack: Stack, agent: Agent, git_repo: GitRepo, docker_client: docker.DockerClient
) -> None:
    since = time.time()
    sha = git_repo.commit({"gobuild.toml": LEAVES_TRACES})
    project_id, other_project_id = new_id("p_"), new_id("p_")

    builds = [await build_and_settle(stack, agent, git_repo, sha, project_id) for _ in range(3)]

    for number, seen in enumerate(builds, start=1):
        assert [c.state for c in seen.completions] == [BuildState.SUCCEEDED], seen.log_lines
        said = [text for stream, text in seen.log_lines if stream == "system"]
        warm = f"Checking out in a warm container of this project (build {number} in it)"
        assert any(text.startswith(warm) for text in said) == (number > 1), said
    # One container for the three builds, labelled with the project, not a build; idle now.
    assert created_steps(docker_client, f"{LABEL_WARM}={project_id}", since) == ["checkout"]
    assert agent.warm_containers is not None
    [idle] = agent.warm_containers.idle()
    assert idle.uses == 3 and idle.key.project_id == project_id
    idle.session.container.reload()
    assert idle.session.container.status == "running"
    # The heartbeat says so at once, for the scheduler to send the project's builds here.
    assert agent.heartbeat_status()["warm"] == [project_id]

    async def heard() -> bool:
        live = await BuilderFleet(stack.redis).live()
        return live[agent.builder_id].warm == (project_id,)

    await wait_until(heard, timeout=10, message="the heartbeat never named the warm project")

    # Another project never gets it: it starts a container of its own.
    seen = await build_and_settle(stack, agent, git_repo, sha, other_project_id)
    assert [c.state for c in seen.completions] == [BuildState.SUCCEEDED], seen.log_lines
    assert created_steps(docker_client, f"{LABEL_WARM}={other_project_id}", since) == ["checkout"]
    # A builder keeps no more idle containers than it has slots (here 1): the older goes.
    [idle] = agent.warm_containers.idle()
    assert idle.key.project_id == other_project_id
    label = f"{LABEL_WARM}={project_id}"
    assert docker_client.containers.list(all=True, filters={"label": label}) == []


async def test_a_build_that_finds_its_warm_container_not_clean_checks_out_in_a_new_one(
    stack: Stack, agent: Agent, git_repo: GitRepo, docker_client: docker.DockerClient
) -> None:
    sha = git_repo.commit({"gobuild.toml": LEAVES_TRACES})
    project_id = new_id("p_")
    await build_and_settle(stack, agent, git_repo, sha, project_id)
    assert agent.warm_containers is not None
    [idle] = agent.warm_containers.idle()
    # A process of the build user that outlived the keeper's round (started after it, here).
    result = await idle.session.run(
        ["sh", "-c", "(sleep 600 > /dev/null 2>&1 &)"], env={}, timeout=30
    )
    assert result.exit_code == 0

    seen = await build_and_settle(stack, agent, git_repo, sha, project_id)

    assert [c.state for c in seen.completions] == [BuildState.SUCCEEDED], seen.log_lines
    said = [text for stream, text in seen.log_lines if stream == "system"]
    assert (
        "The warm container was not clean (processes of an earlier build survive); "
        "checking out in a new container"
    ) in said, said
    with pytest.raises(docker.errors.NotFound):
        docker_client.containers.get(idle.session.container.id)
    [fresh] = agent.warm_containers.idle()
    assert fresh.uses == 1 and fresh.key == idle.key


async def test_with_steps_in_clone_containers_off_each_step_has_a_fresh_container(
    stack: Stack, git_repo: GitRepo, docker_client: docker.DockerClient
) -> None:
    settings = stack.settings.model_copy(update={"build_steps_in_clone_container": False})
    async with running_agent(stack, settings):
        since = time.time()
        sha = git_repo.commit({"gobuild.toml": TWO_STEPS})
        request = await request_build(stack, git_repo, sha)
        seen = await observe(stack, request.build_id)

    # Nothing of the install step's container is left for the build step.
    [completion] = seen.completions
    assert completion.state == BuildState.FAILED
    assert completion.error == "step 'build' exited with code 1"
    label = f"{LABEL_BUILD_ID}={request.build_id}"
    assert created_steps(docker_client, label, since) == ["checkout", "install", "build"]
    assert leftover_containers(docker_client, request.build_id) == []


async def wait_until_all_jobs_are_handled(settings: Settings) -> None:
    """Wait until the builder committed every job on `build-requests` (it took them)."""
    # Same group id, but never subscribed: it only reads the group's committed offsets.
    reader = make_consumer(
        settings,
        [],
        consumer_group(settings.builder_id),
        client_id="test-offsets",
        auto_commit=False,
    )
    await reader.start()
    try:
        partitions = [
            TopicPartition(TOPIC_BUILD_REQUESTS, p)
            for p in reader.partitions_for_topic(TOPIC_BUILD_REQUESTS) or set()
        ]
        ends = await reader.end_offsets(partitions)

        async def all_committed() -> bool:
            committed = {tp: await reader.committed(tp) for tp in partitions}
            return all((committed[tp] or 0) >= end for tp, end in ends.items())

        await wait_until(
            all_committed, timeout=60, interval=0.1, message="the builders never took every job"
        )
    finally:
        await reader.stop()


async def test_job_for_a_finished_build_is_skipped(
    stack: Stack, agent: Agent, git_repo: GitRepo
) -> None:
    sha = git_repo.commit({"index.html": "x"})
    job = await request_build(stack, git_repo, sha)
    first = await observe(stack, job.build_id)
    # What the orchestrator records from the builder's events (so its result is delivered).
    builds = BuildStore(stack.redis)
    for state in (BuildState.RUNNING, BuildState.SUCCEEDED):
        await builds.apply_status(
            BuildStatusChanged(build_id=job.build_id, project_id=job.project_id, state=state)
        )
    await builds.apply_completion(first.completions[0])

    # The same job delivered again (as after a rebalance) must not build a second time.
    await stack.producer.publish(TOPIC_BUILD_REQUESTS, job)
    await wait_until_all_jobs_are_handled(stack.settings)
    everything = await observe(stack, job.build_id, until_terminal=False)

    assert len(everything.completions) == 1
    states = [s.state for s in everything.statuses]
    transitions = [state for n, state in enumerate(states) if n == 0 or states[n - 1] != state]
    assert transitions == [BuildState.RUNNING, BuildState.SUCCEEDED]


async def test_build_of_a_stopping_builder_is_run_again_by_another_builder(
    stack: Stack, git_repo: GitRepo, docker_client: docker.DockerClient
) -> None:
    config = (
        "build = 'echo waiting; sleep 3; mkdir -p dist; echo again > dist/index.html'\n"
        'output = "dist"\n'
    )
    sha = git_repo.commit({"gobuild.toml": config})
    first = Agent(stack.settings.model_copy(update={"builder_id": "first-builder"}))
    first_run = asyncio.create_task(first.run())
    await wait_until_ready(stack, "first-builder")
    request = await request_build(stack, git_repo, sha, builder_id="first-builder")
    await wait_for_log_line(stack, request.build_id, ("stdout", "waiting"))
    # What the orchestrator records from the first builder's status event.
    await BuildStore(stack.redis).apply_status(
        BuildStatusChanged(
            build_id=request.build_id, project_id=request.project_id, state=BuildState.RUNNING
        )
    )

    first.request_stop()
    await asyncio.wait_for(first_run, 60)
    assert leftover_containers(docker_client, request.build_id) == []

    second = Agent(stack.settings.model_copy(update={"builder_id": "second-builder"}))
    second_run = asyncio.create_task(second.run())
    try:
        await wait_until_ready(stack, "second-builder")
        # The scheduler, once the first builder's heartbeat is gone, gives the build to the
        # second, and sends it the job for the next attempt.
        await give(stack, request.build_id, "second-builder", attempt=2)
        again = request.model_copy(update={"builder_id": "second-builder", "attempt": 2})
        await stack.producer.publish(TOPIC_BUILD_REQUESTS, again)
        seen = await observe(stack, request.build_id)
    finally:
        second.request_stop()
        await asyncio.wait_for(second_run, 60)

    [completion] = seen.completions
    assert completion.state == BuildState.SUCCEEDED
    assert {s.builder_id for s in seen.statuses} == {"first-builder", "second-builder"}
    first_attempt = [c for c in seen.logs if c.attempt == 1]
    second_attempt = [c for c in seen.logs if c.attempt == 2]
    # The stopped attempt's log ends with the reason, then its final chunk.
    first_lines = [line for c in first_attempt for line in c.lines]
    assert first_attempt[-1].final
    assert first_lines[-1] == "Builder stopped; the build will run again on another builder"
    assert ("system", "Resuming after builder loss (attempt 2)") in [
        (c.stream, line) for c in second_attempt for line in c.lines
    ]
    page = await stack.storage.get(f"/deployments/{completion.deployment_id}/files/index.html")
    assert page.text == "again\n"


async def test_job_held_by_a_builder_that_just_died_is_taken_over_not_dropped(
    stack: Stack, agent: Agent, git_repo: GitRepo, docker_client: docker.DockerClient
) -> None:
    sha = git_repo.commit({"index.html": "<p>taken over</p>"})
    # A builder claimed the build and died: its claim and its last heartbeat are still there.
    project_id = "p_ghost"
    build_id = new_id("b_")
    await stack.redis.set(key_build_claim(build_id), "ghost-builder", ex=60)
    await stack.redis.set(key_builder_heartbeat("ghost-builder"), "{}", ex=4)
    ghost_container = docker_client.containers.run(
        BUILD_IMAGE, ["sleep", "300"], detach=True, labels={LABEL_BUILD_ID: build_id}
    )
    request = await request_build(stack, git_repo, sha, build_id=build_id, project_id=project_id)
    await BuildStore(stack.redis).apply_status(
        BuildStatusChanged(build_id=build_id, project_id=project_id, state=BuildState.RUNNING)
    )

    seen = await observe(stack, request.build_id)

    [completion] = seen.completions
    assert completion.state == BuildState.SUCCEEDED
    assert ("system", "Resuming after builder loss (attempt 1)") in seen.log_lines
    # The dead builder's container of this build went before the build ran again.
    with pytest.raises(docker.errors.NotFound):
        ghost_container.reload()


async def wait_for_completion(stack: Stack, build_id: str) -> Observed:
    """The build's log chunks and completion, read until its completion arrived."""
    topics = [TOPIC_BUILD_LOGS, TOPIC_BUILD_COMPLETIONS]
    consumer = make_consumer(stack.settings, topics, None, client_id="test-completion")
    await consumer.start()
    seen = Observed()
    try:
        async with asyncio.timeout(60):
            while not seen.completions:
                event = decode_record(await consumer.getone())
                if getattr(event, "build_id", None) != build_id:
                    continue
                if isinstance(event, BuildCompleted):
                    seen.completions.append(event)
                elif isinstance(event, LogChunk):
                    seen.logs.append(event)
    finally:
        await consumer.stop()
    return seen


async def test_a_result_left_in_the_outbox_is_delivered_and_its_build_not_run_again(
    stack: Stack, agent: Agent, git_repo: GitRepo, docker_client: docker.DockerClient
) -> None:
    sha = git_repo.commit({"index.html": "<p>built once</p>"})
    # A builder ran the build and was gone before the orchestrator applied its result; the
    # job comes back (the group re-delivers it, or the orchestrator requests it again).
    build_id, project_id = new_id("b_"), new_id("p_")
    result = PendingResult(
        completion=BuildCompleted(
            build_id=build_id,
            project_id=project_id,
            state=BuildState.SUCCEEDED,
            duration_seconds=3.5,
            deployment_id="site-gone1",
            deployment_url="http://site-gone1.localhost/",
            builder_id="gone-builder",
        ),
        status=BuildStatusChanged(
            build_id=build_id,
            project_id=project_id,
            state=BuildState.SUCCEEDED,
            builder_id="gone-builder",
        ),
    )
    outbox = ResultOutbox(stack.redis)
    await outbox.put(result)
    await request_build(stack, git_repo, sha, build_id=build_id, project_id=project_id)

    seen = await wait_for_completion(stack, build_id)

    # The live builder published the gone builder's result, and did not build it again.
    assert seen.completions == [result.completion]
    assert seen.logs == []
    assert leftover_containers(docker_client, build_id) == []
    await wait_until_all_jobs_are_handled(stack.settings)
    assert await outbox.holds(build_id)
    # Once the orchestrator applied it, the result leaves the outbox.
    builds = BuildStore(stack.redis)
    await builds.apply_completion(result.completion)
    await builds.apply_status(result.status)

    async def delivered() -> bool:
        return not await outbox.holds(build_id)

    await wait_until(delivered, timeout=10, message="the applied result stayed in the outbox")


async def test_a_job_sent_again_before_the_result_was_applied_does_not_run_it_twice(
    stack: Stack, agent: Agent, git_repo: GitRepo
) -> None:
    sha = git_repo.commit({"index.html": "<p>once</p>"})
    job = await request_build(stack, git_repo, sha)
    # Sent again (the orchestrator's reconcile after a lost broker) while no orchestrator has
    # applied the result yet: the record still says the build runs.
    await stack.producer.publish(TOPIC_BUILD_REQUESTS, job)
    await wait_until_all_jobs_are_handled(stack.settings)
    seen = await observe(stack, job.build_id)

    # One result (the outbox may publish it again, as the same event), one attempt, one deploy.
    assert len({completion.event_id for completion in seen.completions}) == 1
    assert {chunk.attempt for chunk in seen.logs} == {1}
    assert len(await DeploymentRecords(stack.redis).list_for_project(job.project_id)) == 1


async def test_a_builder_restarted_before_its_first_job_runs_the_job_sent_while_it_was_down(
    stack: Stack, git_repo: GitRepo
) -> None:
    # A new builder, so its group has no committed offsets: it starts reading at the end.
    settings = stack.settings.model_copy(update={"builder_id": f"fresh-{uuid.uuid4().hex[:6]}"})
    async with running_agent(stack, settings):
        pass

    # Given to it while it was down (its heartbeat had not expired yet).
    sha = git_repo.commit({"index.html": "<p>sent while down</p>"})
    job = await request_build(stack, git_repo, sha, builder_id=settings.builder_id)
    async with running_agent(stack, settings, ready=False):
        seen = await observe(stack, job.build_id)
    assert [completion.state for completion in seen.completions] == [BuildState.SUCCEEDED]


async def test_a_job_for_another_builder_or_not_given_to_this_one_is_skipped(
    stack: Stack, agent: Agent, git_repo: GitRepo
) -> None:
    sha = git_repo.commit({"index.html": "<p>not mine</p>"})
    elsewhere = await request_build(stack, git_repo, sha, builder_id="other-builder")
    # Addressed to this builder, but the scheduler has since given it to another one.
    given_away = await request_build(stack, git_repo, sha, builder_id="other-builder")
    taken_back = given_away.model_copy(update={"builder_id": agent.builder_id})
    await stack.producer.publish(TOPIC_BUILD_REQUESTS, taken_back)

    await wait_until_all_jobs_are_handled(stack.settings)
    await asyncio.sleep(1)

    for job in (elsewhere, taken_back):
        build = await BuildStore(stack.redis).get(job.build_id)
        assert build is not None and build.state == BuildState.DISPATCHED
        assert not await stack.redis.exists(key_build_claim(job.build_id))
    assert agent.running_builds == []


async def test_the_heartbeat_tells_the_scheduler_what_the_builder_offers(stack: Stack) -> None:
    settings = stack.settings.model_copy(
        update={
            "builder_id": "labelled",
            "builder_labels": " node, arch=amd64,,",
            "builder_concurrency": 3,
        }
    )
    agent = Agent(settings)
    task = asyncio.create_task(agent.run())
    try:
        await wait_until_ready(stack, "labelled")
        [builder] = (await BuilderFleet(stack.redis).live()).values()
    finally:
        agent.request_stop()
        await asyncio.wait_for(task, 60)
    assert (builder.id, builder.capacity, builder.labels) == ("labelled", 3, ("arch=amd64", "node"))
    assert builder.host and builder.cpus and builder.memory_bytes and builder.started_at
    assert builder.running == ()
    # A stopped builder's heartbeat ends with it: the scheduler takes its builds back at once.
    assert await BuilderFleet(stack.redis).live() == {}
