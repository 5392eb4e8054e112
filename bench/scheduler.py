"""The scheduler's figures (GitHub issue 8), measured on this machine in one run:

- webhook -> build started (p50, p95) while the builders are idle;
- slot free -> next build started (p50): a build's end to the start of the next queued build;
- makespan and builds/minute of N trivial builds on 2 agents x 2 slots, then on 1 agent x 4;
- the floor: M bare `docker run`s of the same step, 4 at a time, builds/minute.

Goal: GoBuild at >= 90 % of the floor's builds/minute. Starts `gobuild dev` without a builder
of its own (GOBUILD_DEV_BUILDER=false) and the agents as processes of their own. Times come
from the build records (`started_at`, `finished_at`: the builders' clocks, this machine's), so
the polling interval does not enter them. Run: `.venv/bin/python bench/scheduler.py`.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any

from gobuild.platform.localstack import (
    BUILD_IMAGE,
    FINISHED_STATES,
    BuilderAgent,
    GitRepo,
    Stack,
    start_stack,
)

SECRET = "bench-webhook-secret-0123456789"
STEP = 'mkdir -p dist && echo "$GOBUILD_COMMIT_SHA" > dist/index.html'
TOML = f"build = '{STEP}'\noutput = 'dist'\n"
SLOTS = 4
PROJECT = "bench"


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, round(share * len(ordered)) - 1)]


def epoch(timestamp: str) -> float:
    return datetime.fromisoformat(timestamp).timestamp()


def start_fleet(stack: Stack, shape: list[tuple[str, int]]) -> list[BuilderAgent]:
    """Agents (id, slots) started together, returned once each is ready."""
    agents = [stack.start_builder(name, concurrency=slots, wait=False) for name, slots in shape]
    for agent in agents:
        stack.wait_for_builder(agent)
    return agents


def commit_branches(repo: GitRepo, prefix: str, count: int) -> list[tuple[str, str]]:
    """A commit on each of `count` branches (each its own preview: none supersedes another)."""
    branches = [f"{prefix}{n:03d}" for n in range(count)]
    return [
        (branch, repo.commit({"gobuild.toml": TOML, "n.txt": os.urandom(4).hex()}, branch, branch))
        for branch in branches
    ]


def send(stack: Stack, repo: GitRepo, sha: str, branch: str) -> str:
    response = stack.push_webhook(repo.bare, sha, SECRET, branch=branch)
    if response.status_code != 202:
        raise SystemExit(f"webhook refused: {response.status_code} {response.text}")
    return str(response.json()["build_id"])


def wait_finished(stack: Stack, ids: list[str], timeout: float) -> list[dict[str, Any]]:
    """The builds once every one ended (read a page of the project's builds at a time, so the
    polling costs the stack little); exits if one did not succeed."""
    deadline = time.monotonic() + timeout
    wanted = set(ids)
    while True:
        listed = stack.http.get(f"/api/projects/{PROJECT}/builds", params={"limit": 500})
        listed.raise_for_status()
        found = {b["id"]: b for b in listed.json()["builds"] if b["id"] in wanted}
        if len(found) == len(wanted) and all(b["state"] in FINISHED_STATES for b in found.values()):
            break
        if time.monotonic() > deadline:
            raise SystemExit(f"builds not finished after {timeout} s\n{stack.tail()}")
        time.sleep(0.5)
    failed = [b for b in found.values() if b["state"] != "succeeded"]
    if failed:
        raise SystemExit(f"{len(failed)} builds did not succeed: {failed[:3]}")
    return [found[build_id] for build_id in ids]


def idle_start_latency(stack: Stack, repo: GitRepo, runs: int) -> list[float]:
    """Webhook -> `started_at`, one build at a time (every builder idle when it arrives)."""
    latencies = []
    for branch, sha in commit_branches(repo, "idle", runs + 1):
        sent = time.time()
        build_id = send(stack, repo, sha, branch)
        [build] = wait_finished(stack, [build_id], 120)
        if branch != "idle000":  # the first warms up
            latencies.append(epoch(build["started_at"]) - sent)
    return latencies


def throughput(stack: Stack, repo: GitRepo, prefix: str, count: int) -> dict[str, Any]:
    """`count` builds sent in a burst: makespan (first webhook -> last build finished),
    builds/minute and the slot handoff times (p50)."""
    commits = commit_branches(repo, prefix, count)
    first_sent = time.time()
    ids = [send(stack, repo, sha, branch) for branch, sha in commits]
    builds = wait_finished(stack, ids, 600)
    makespan = max(epoch(b["finished_at"]) for b in builds) - first_sent
    # Every build waited from the start: the k-th start after the first SLOTS took the slot
    # the k-th build to finish freed.
    starts = sorted(epoch(b["started_at"]) for b in builds)
    ends = sorted(epoch(b["finished_at"]) for b in builds)
    handoffs = [start - end for start, end in zip(starts[SLOTS:], ends, strict=False)]
    return {
        "makespan": makespan,
        "per_minute": count / makespan * 60,
        "handoff_p50": statistics.median(handoffs),
        "held_mean": statistics.mean(
            epoch(b["finished_at"]) - epoch(b["started_at"]) for b in builds
        ),
        "steps": step_means(builds),
    }


def step_means(builds: list[dict[str, Any]]) -> dict[str, float]:
    """Mean duration of each step the builds recorded (checkout, build, upload, ...)."""
    durations: dict[str, list[float]] = {}
    for build in builds:
        for step in build["steps"]:
            if step["duration_seconds"] is not None:
                durations.setdefault(step["name"], []).append(step["duration_seconds"])
    return {name: statistics.mean(values) for name, values in durations.items()}


def floor(runs: int, parallel: int) -> dict[str, float]:
    """`runs` bare `docker run`s of the build step, `parallel` at a time."""
    argv = ["docker", "run", "--rm", "--network", "none", "-e", f"GOBUILD_COMMIT_SHA={'0' * 40}"]
    argv += [BUILD_IMAGE, "sh", "-c", f"cd /tmp && {STEP}"]
    subprocess.run(argv, check=True, capture_output=True)  # warm-up
    started = time.perf_counter()
    with ThreadPoolExecutor(parallel) as pool:
        for result in pool.map(
            lambda _: subprocess.run(argv, check=True, capture_output=True), range(runs)
        ):
            result.check_returncode()
    elapsed = time.perf_counter() - started
    return {"makespan": elapsed, "per_minute": runs / elapsed * 60}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--latency-runs", type=int, default=10)
    parser.add_argument("--builds", type=int, default=40)
    parser.add_argument("--floor-runs", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        repo = GitRepo.create(root)
        stack = start_stack(
            root / "data",
            BUILD_IMAGE,
            GOBUILD_DEV_BUILDER="false",
            # The benchmark polls every build and sends its webhooks in bursts.
            GOBUILD_RATE_LIMIT_API_REQUESTS="1000000",
            GOBUILD_RATE_LIMIT_WEBHOOK_REQUESTS="1000000",
        )
        try:
            stack.create_project(PROJECT, repo.bare, SECRET)
            fleet = start_fleet(stack, [("bench-a", 2), ("bench-b", 2)])
            latencies = idle_start_latency(stack, repo, args.latency_runs)
            print(
                f"webhook -> build started, idle builders ({len(latencies)} builds): "
                f"p50 {statistics.median(latencies):.2f} s, p95 {percentile(latencies, 0.95):.2f} s"
            )
            two_by_two = throughput(stack, repo, "two", args.builds)
            for agent in fleet:
                agent.stop()
            start_fleet(stack, [("bench-four", SLOTS)])
            warm_up = [send(stack, repo, sha, b) for b, sha in commit_branches(repo, "warm", SLOTS)]
            wait_finished(stack, warm_up, 120)
            one_by_four = throughput(stack, repo, "four", args.builds)
        finally:
            stack.stop()
    floor_figures = floor(args.floor_runs, SLOTS)
    for label, figures in (("2 agents x 2 slots", two_by_two), ("1 agent x 4 slots", one_by_four)):
        print(
            f"{label}, {args.builds} trivial builds: makespan {figures['makespan']:.1f} s, "
            f"{figures['per_minute']:.1f} builds/min, "
            f"slot free -> next build started p50 {figures['handoff_p50']:.2f} s"
        )
        steps = ", ".join(f"{name} {mean:.2f}" for name, mean in figures["steps"].items())
        print(f"  a build holds its slot {figures['held_mean']:.2f} s on average ({steps})")
    print(
        f"floor, {args.floor_runs} bare docker runs, {SLOTS} at a time: "
        f"{floor_figures['makespan']:.1f} s, {floor_figures['per_minute']:.1f} builds/min "
        f"({floor_figures['makespan'] * SLOTS / args.floor_runs:.2f} s a run)"
    )
    for label, figures in (("2x2", two_by_two), ("1x4", one_by_four)):
        share = figures["per_minute"] / floor_figures["per_minute"] * 100
        verdict = "meets" if share >= 90 else "misses"
        print(f"GoBuild {label} / floor: {share:.0f} % ({verdict} the goal of >= 90 %)")


if __name__ == "__main__":
    main()
