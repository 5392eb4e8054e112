"""The scheduler across a fleet (GitHub issue 8): builds wait in the queue, each job goes to a
builder with a free slot, production goes first, newer pushes supersede older ones, lost
builders and a lost broker lose no build, dependencies build in order, and a build no builder
can take says why. Real git, Docker, broker, Redis; every builder agent a process of its own,
beside a `gobuild dev` that runs none (GOBUILD_DEV_BUILDER=false).
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import docker
import pytest

from gobuild.platform.localstack import FINISHED_STATES
from tests.conftest import BUILD_IMAGE, GitRepo
from tests.e2e.stack import BuilderAgent, Stack, start_stack

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

SECRET = "e2e-webhook-secret-scheduler-0123"
# Each step prints when it began and ended (the host's clock: containers share it): the log
# shows that it ran once, and when, apart from the platform's own records.
TIMED_SITE = """\
build = '''
echo "slot-start $(date +%s.%N)"
sleep {seconds}
mkdir -p dist
printf '%s' "$GOBUILD_COMMIT_SHA" > dist/index.html
echo "slot-end $(date +%s.%N)"
'''
output = "dist"
"""
STEP_START = re.compile(r"^slot-start (\d+\.\d+)$", re.MULTILINE)
STEP_END = re.compile(r"^slot-end (\d+\.\d+)$", re.MULTILINE)
# A free slot may stay empty this long while builds wait: a build's end (or its webhook)
# reaching the scheduler, and the job reaching its builder, on a loaded two-core machine.
SLOT_HANDOFF_SECONDS = 3.0


def timed_site(seconds: float) -> str:
    return TIMED_SITE.format(seconds=seconds)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """One `gobuild dev` without a builder of its own, for every test of the module; each
    test starts the builders it needs (`fleet`)."""
    docker.from_env().images.get(BUILD_IMAGE)
    running = start_stack(
        tmp_path_factory.mktemp("gobuild"),
        BUILD_IMAGE,
        GOBUILD_DEV_BUILDER="false",
        # The tests poll every build they start, many at a time.
        GOBUILD_RATE_LIMIT_API_REQUESTS="100000",
        GOBUILD_RATE_LIMIT_WEBHOOK_REQUESTS="10000",
        GOBUILD_RECONCILE_INTERVAL_SECONDS="2",
        GOBUILD_RECONCILE_GRACE_SECONDS="10",
    )
    yield running
    running.stop()


@dataclass
class Fleet:
    """The builder agents of one test; a tag of its own in their ids keeps them apart from
    other tests' agents in `GET /api/builders` and the build records."""

    stack: Stack
    tag: str

    def start(self, name: str, *, slots: int = 1, labels: tuple[str, ...] = ()) -> BuilderAgent:
        return self.stack.start_builder(f"{self.tag}-{name}", concurrency=slots, labels=labels)

    def start_many(self, names: list[str], *, slots: int = 1) -> list[BuilderAgent]:
        """Several agents started at once (each takes seconds to connect)."""
        agents = [
            self.stack.start_builder(f"{self.tag}-{name}", concurrency=slots, wait=False)
            for name in names
        ]
        for agent in agents:
            self.stack.wait_for_builder(agent)
        return agents


@pytest.fixture
def fleet(stack: Stack) -> Iterator[Fleet]:
    """Builders for this test; stopped after it, and gone from the fleet (a SIGKILLed one
    once its heartbeat expired) before the next test starts its own."""
    yield Fleet(stack, uuid.uuid4().hex[:6])
    cancel_unfinished_builds(stack)  # a failed test leaves no build for the next one
    stack.stop_builders()
    deadline = time.monotonic() + 40
    while time.monotonic() < deadline:
        builders = stack.builders()
        if builders is None or not any(b.get("state") == "online" for b in builders):
            break
        time.sleep(0.5)


def cancel_unfinished_builds(stack: Stack) -> None:
    """Cancel every build of the stack that has not ended."""
    for project in stack.http.get("/api/projects").json()["projects"]:
        listed = stack.http.get(f"/api/projects/{project['id']}/builds", params={"limit": 500})
        for build in listed.json()["builds"]:
            if build["state"] not in FINISHED_STATES:
                stack.http.post(f"/api/builds/{build['id']}/cancel")


def push(stack: Stack, repo: GitRepo, files: dict[str, str], branch: str = "main") -> str:
    """Commit `files` to `branch`, send its push webhook; the id of the build accepted."""
    sha = repo.commit(files, f"change on {branch}", branch=branch)
    response = stack.push_webhook(repo.bare, sha, SECRET, branch=branch)
    assert response.status_code == 202, response.text
    return str(response.json()["build_id"])


def push_branches(stack: Stack, repo: GitRepo, toml: str, branches: list[str]) -> list[str]:
    """One commit on each branch first, then their webhooks in a burst: the builds accepted."""
    shas = [repo.commit({"gobuild.toml": toml, "b.txt": b}, b, branch=b) for b in branches]
    ids = []
    for sha, branch in zip(shas, branches, strict=True):
        response = stack.push_webhook(repo.bare, sha, SECRET, branch=branch)
        assert response.status_code == 202, response.text
        ids.append(str(response.json()["build_id"]))
    return ids


def set_project(stack: Stack, project_id: str, **fields: Any) -> dict[str, Any]:
    response = stack.http.patch(f"/api/projects/{project_id}", json=fields)
    assert response.status_code == 200, response.text
    return dict(response.json())


BRIEF_FIELDS = ("id", "state", "reason", "branch", "builder_id", "attempt", "superseded_by")


def brief(build: dict[str, Any]) -> dict[str, Any]:
    """The fields of a build a failure message needs (pytest shortens long dicts)."""
    return {name: build.get(name) for name in (*BRIEF_FIELDS, "queue") if build.get(name)}


def get_build(stack: Stack, build_id: str) -> dict[str, Any]:
    return dict(stack.http.get(f"/api/builds/{build_id}").json())


def build_log(stack: Stack, build_id: str) -> str:
    return stack.http.get(f"/api/builds/{build_id}/logs").text


def deployments(stack: Stack, project_id: str) -> list[dict[str, Any]]:
    response = stack.http.get(f"/api/projects/{project_id}/deployments")
    assert response.status_code == 200, response.text
    return list(response.json()["deployments"])


def epoch(timestamp: str) -> float:
    return datetime.fromisoformat(timestamp).timestamp()


def wait_for(condition: Callable[[], Any], timeout: float, failure: Callable[[], str]) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(failure())
        time.sleep(0.2)


def wait_for_builds(stack: Stack, ids: list[str], timeout: float) -> list[dict[str, Any]]:
    """The builds once every one finished (a succeeded one once deployed), in `ids` order;
    fails naming those that did not within `timeout` seconds, which all share."""
    found: dict[str, dict[str, Any]] = {}

    def finished() -> bool:
        for build_id in set(ids) - set(found):
            build = get_build(stack, build_id)
            if build["state"] in FINISHED_STATES and (
                build["state"] != "succeeded" or build["deployment_url"]
            ):
                found[build_id] = build
        return len(found) == len(set(ids))

    def failure() -> str:
        left = [brief(get_build(stack, b)) for b in ids if b not in found]
        return (
            f"{len(left)} of {len(ids)} builds unfinished after {timeout}s: {left}\n{stack.tail()}"
        )

    wait_for(finished, timeout, failure)
    return [found[build_id] for build_id in ids]


def step_interval(log: str) -> tuple[float, float]:
    """When the build's one step began and ended; fails if it ran more or less than once."""
    starts, ends = STEP_START.findall(log), STEP_END.findall(log)
    assert len(starts) == len(ends) == 1, f"the step ran {len(starts)} times:\n{log}"
    return float(starts[0]), float(ends[0])


def most_at_once(intervals: list[tuple[float, float]]) -> int:
    """The largest number of intervals that overlap (one ending as another starts: not)."""
    events = sorted([(end, -1) for _, end in intervals] + [(start, 1) for start, _ in intervals])
    running = peak = 0
    for _, change in events:
        running += change
        peak = max(peak, running)
    return peak


def longest_idle_slot(
    accepted: list[float], intervals: list[tuple[float, float]], slots: int
) -> tuple[float, float]:
    """The longest stretch (length, when it began) in which fewer builds held a slot than
    there were slots and builds to fill them: a build accepted and not yet ended counts as
    pending, and min(slots, pending) should hold one."""
    moments = sorted({*accepted, *(t for interval in intervals for t in interval)})
    longest, longest_at, began = 0.0, 0.0, None
    for moment in moments:
        pending = sum(a <= moment < end for a, (_, end) in zip(accepted, intervals, strict=True))
        running = sum(start <= moment < end for start, end in intervals)
        if running < min(slots, pending):
            began = moment if began is None else began
        elif began is not None:
            if moment - began > longest:
                longest, longest_at = moment - began, began
            began = None
    return longest, longest_at


def timeline(builds: list[dict[str, Any]], steps: list[tuple[float, float]]) -> str:
    """When each build was accepted, held its slot, ran its step, and where (for failures)."""
    zero = min(epoch(b["created_at"]) for b in builds)
    rows = sorted(zip(builds, steps, strict=True), key=lambda row: row[0]["started_at"])
    return "\n".join(
        f"accepted {epoch(b['created_at']) - zero:6.2f}"
        f"  ran {epoch(b['started_at']) - zero:6.2f} .. {epoch(b['finished_at']) - zero:6.2f}"
        f"  step {start - zero:6.2f} .. {end - zero:6.2f}  on {b['builder_id']}"
        for b, (start, end) in rows
    )


def test_twelve_builds_fill_three_agents_of_two_slots_and_run_once_each(
    stack: Stack, fleet: Fleet, git_repo: GitRepo
) -> None:
    agents = fleet.start_many(["a", "b", "c"], slots=2)
    project = stack.create_project("fleet", git_repo.bare, SECRET)
    branches = [f"f{n:02d}" for n in range(12)]  # a branch each: none supersedes another

    ids = push_branches(stack, git_repo, timed_site(2), branches)

    builds = wait_for_builds(stack, ids, timeout=120)
    assert [b["state"] for b in builds] == ["succeeded"] * 12, [brief(b) for b in builds]
    assert {b["attempt"] for b in builds} == {1}, [brief(b) for b in builds]
    assert {b["builder_id"] for b in builds} <= {a.builder_id for a in agents}
    assert len(deployments(stack, project["id"])) == 12
    steps = [step_interval(build_log(stack, b["id"])) for b in builds]  # each ran once
    # A build holds its builder's slot from when the builder started it until it ended.
    held = [(epoch(b["started_at"]), epoch(b["finished_at"])) for b in builds]
    accepted = [epoch(b["created_at"]) for b in builds]
    shown = timeline(builds, steps)

    assert most_at_once(held) == 6, shown
    for agent in agents:
        mine = [h for h, b in zip(held, builds, strict=True) if b["builder_id"] == agent.builder_id]
        assert most_at_once(mine) <= 2, shown
    idle, since = longest_idle_slot(accepted, held, slots=6)
    assert idle <= SLOT_HANDOFF_SECONDS, (
        f"a slot stayed free for {idle:.1f}s from {since - min(accepted):.1f}s on "
        f"while builds waited:\n{shown}"
    )


def test_a_production_build_queued_behind_previews_takes_the_next_free_slot(
    stack: Stack, fleet: Fleet, git_repo: GitRepo
) -> None:
    fleet.start("solo", slots=1)
    stack.create_project("priority", git_repo.bare, SECRET)
    blocker = push(stack, git_repo, {"gobuild.toml": timed_site(8)}, branch="blocker")
    stack.wait_for_log(blocker, "slot-start", timeout=60)

    previews = push_branches(stack, git_repo, timed_site(0), [f"p{n}" for n in range(1, 6)])
    production = push(stack, git_repo, {"gobuild.toml": timed_site(0), "prod.txt": "x"})

    # While the slot is taken, the queue shows the production build first (once the
    # scheduler placed them all: the gateway shows a build it did not place yet last).
    seen: list[Any] = []

    def ranked() -> list[dict[str, Any]] | None:
        seen[:] = [get_build(stack, b).get("queue") for b in [production, *previews]]
        placed = all(seen) and [q["position"] for q in seen] == [1, 2, 3, 4, 5, 6]
        return list(seen) if placed else None

    queues = wait_for(
        ranked, 6, lambda: f"queue places not in push order, production first: {seen}"
    )
    assert [q["priority"] for q in queues] == ["high"] + ["normal"] * 5, queues
    assert {q["reason"] for q in queues} == {"no_free_slot"}, queues

    builds = wait_for_builds(stack, [blocker, production, *previews], timeout=120)
    assert [b["state"] for b in builds] == ["succeeded"] * 7, [brief(b) for b in builds]
    starts = {b["id"]: step_interval(build_log(stack, b["id"]))[0] for b in builds}
    assert sorted(starts, key=starts.__getitem__) == [blocker, production, *previews], starts


def test_a_second_quick_push_supersedes_the_first_and_only_it_deploys(
    stack: Stack, fleet: Fleet, git_repo: GitRepo
) -> None:
    fleet.start("one", slots=1)
    project = stack.create_project("superseded", git_repo.bare, SECRET)
    site = timed_site(3)

    first = push(stack, git_repo, {"gobuild.toml": site, "v.txt": "1"})
    second = push(stack, git_repo, {"gobuild.toml": site, "v.txt": "2"})

    cancelled = stack.wait_for_build(first, timeout=60)
    assert cancelled["state"] == "cancelled", brief(cancelled)
    assert cancelled["superseded_by"] == second, brief(cancelled)
    assert cancelled["deployment_id"] is None
    built = stack.wait_for_build(second, timeout=90)
    assert built["state"] == "succeeded", brief(built)
    assert [d["build_id"] for d in deployments(stack, project["id"])] == [second]
    assert stack.get_site("superseded").text == built["commit_sha"]


def test_a_build_whose_agent_is_sigkilled_completes_on_another_agent_once(
    stack: Stack, fleet: Fleet, git_repo: GitRepo
) -> None:
    agents = {agent.builder_id: agent for agent in fleet.start_many(["x", "y"])}
    toml = (
        "build = 'echo started; sleep 6; mkdir -p dist; echo survived > dist/index.html'\n"
        "output = 'dist'\n"
    )
    project = stack.create_project("orphaned", git_repo.bare, SECRET)
    build_id = push(stack, git_repo, {"gobuild.toml": toml})
    running = stack.wait_for_build(build_id, until="running", timeout=60)
    stack.wait_for_log(build_id, "started")

    lost = agents.pop(running["builder_id"])
    lost.kill()

    build = stack.wait_for_build(build_id, timeout=120)
    assert build["state"] == "succeeded", f"{build}\n{build_log(stack, build_id)}"
    assert build["builder_id"] == next(iter(agents)), brief(build)
    assert build["attempt"] == 2, brief(build)
    assert [d["build_id"] for d in deployments(stack, project["id"])] == [build_id]
    assert stack.get_site("orphaned").text == "survived\n"
    leftovers = docker.from_env().containers.list(
        all=True, filters={"label": f"gobuild.build_id={build_id}"}
    )
    assert leftovers == []


def test_a_dependency_builds_first_and_a_cycle_is_refused_by_name(
    stack: Stack, fleet: Fleet, git_repo: GitRepo, tmp_path: Path
) -> None:
    fleet.start("deps", slots=2)
    downstream_repo = GitRepo.create(tmp_path / "downstream")
    downstream_repo.commit({"gobuild.toml": timed_site(0)}, "downstream")
    upstream = stack.create_project("upstream", git_repo.bare, SECRET)
    downstream = stack.create_project("downstream", downstream_repo.bare, SECRET)
    shown = set_project(stack, downstream["id"], depends_on=[upstream["id"]])
    assert shown["depends_on"] == [upstream["id"]]

    first = stack.wait_for_build(push(stack, git_repo, {"gobuild.toml": timed_site(1)}))
    assert first["state"] == "succeeded", brief(first)

    def downstream_builds() -> list[dict[str, Any]]:
        listed = stack.http.get(f"/api/projects/{downstream['id']}/builds").json()
        return list(listed["builds"])

    wait_for(downstream_builds, 30, lambda: f"downstream never built\n{stack.tail()}")
    then = stack.wait_for_build(downstream_builds()[-1]["id"], timeout=90)
    assert then["state"] == "succeeded", brief(then)
    assert (then["source"], then["triggered_by"]) == ("dependency", first["id"])
    assert then["production"] is True
    assert epoch(then["started_at"]) >= epoch(first["finished_at"]), (first, then)
    assert [b["id"] for b in downstream_builds()] == [then["id"]]

    cycle = stack.http.patch(
        f"/api/projects/{upstream['id']}", json={"depends_on": [downstream["id"]]}
    )
    assert cycle.status_code == 422, cycle.text
    assert "upstream" in cycle.text and "downstream" in cycle.text, cycle.text
    assert stack.http.get(f"/api/projects/{upstream['id']}").json()["depends_on"] == []


def test_a_build_needing_a_label_no_builder_has_shows_why_and_where_it_waits(
    stack: Stack, fleet: Fleet, git_repo: GitRepo
) -> None:
    fleet.start("plain", slots=1, labels=("arch=amd64",))
    project = stack.create_project("labelled", git_repo.bare, SECRET)
    set_project(stack, project["id"], required_labels=["gpu"])

    build_id = push(stack, git_repo, {"gobuild.toml": timed_site(0)})

    def waiting() -> dict[str, Any] | None:
        queue = get_build(stack, build_id).get("queue")
        return queue if queue and queue["reason"] == "no_builder_with_labels" else None

    queue = wait_for(
        waiting, 20, lambda: f"queue never said why: {get_build(stack, build_id)}\n{stack.tail()}"
    )
    assert queue["position"] == 1, queue
    assert queue["reason_text"], queue
    assert queue["estimated_start"] is None, queue
    assert get_build(stack, build_id)["state"] == "queued"
    listed = stack.http.get("/api/queue").json()["builds"]
    assert [(b["build_id"], b["position"], b["reason"]) for b in listed] == [
        (build_id, 1, "no_builder_with_labels")
    ], listed

    # A builder that has the label takes it.
    gpu = fleet.start("gpu", slots=1, labels=("gpu", "arch=amd64"))
    build = stack.wait_for_build(build_id, timeout=60)
    assert build["state"] == "succeeded", brief(build)
    assert build["builder_id"] == gpu.builder_id, brief(build)


# Last: a broker that does not come back whole would fail every test after it.
def test_builds_waiting_for_slots_survive_the_broker_being_killed_and_run_once(
    stack: Stack, fleet: Fleet, git_repo: GitRepo
) -> None:
    fleet.start("steady", slots=2)
    project = stack.create_project("brokerless", git_repo.bare, SECRET)
    ids = push_branches(stack, git_repo, timed_site(1), [f"w{n:02d}" for n in range(12)])

    def ten_waiting() -> bool:
        states = [get_build(stack, build_id)["state"] for build_id in ids]
        return states.count("queued") >= 10

    wait_for(ten_waiting, 30, lambda: f"10 builds never waited at once\n{stack.tail()}")
    stack.wait_for_broker(stack.kill_broker())  # `gobuild dev` starts an empty one

    builds = wait_for_builds(stack, ids, timeout=120)
    assert [b["state"] for b in builds] == ["succeeded"] * 12, [brief(b) for b in builds]
    # Once each: one deployment a build, and no log shows its step twice (lines a running
    # build printed while the broker was away may be missing, not doubled).
    deployed = [d["build_id"] for d in deployments(stack, project["id"])]
    assert sorted(deployed) == sorted(ids)
    for build in builds:
        log = build_log(stack, build["id"])
        assert len(STEP_START.findall(log)) <= 1, f"{brief(build)} ran twice:\n{log}"
