"""Time from a signed push webhook to the new page being served at the production alias.

Starts `gobuild dev` on free ports with a trivial build (one step writing index.html), pushes
N commits one after another and prints each latency, the median (p50) and the p95, with the
machine's load average before and after (builds share the CPU with everything else, so a
figure means little without it). Run: `make bench`.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import time

from gobuild.platform.localstack import BUILD_IMAGE, stack_with_repository

SECRET = "bench-webhook-secret-0123456789"
TOML = (
    "build = 'mkdir -p dist && echo \"$GOBUILD_COMMIT_SHA\" > dist/index.html'\noutput = 'dist'\n"
)


def percentile(sorted_values: list[float], fraction: float) -> float:
    """The nearest-rank percentile of `sorted_values` (p95 of 10 values is the largest)."""
    return sorted_values[max(0, math.ceil(fraction * len(sorted_values)) - 1)]


def load_average() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    print(f"load average (1, 5, 15 min) before: {load_average()} on {os.cpu_count()} CPUs")
    with stack_with_repository(BUILD_IMAGE) as (stack, repo):
        stack.create_project("bench", repo.bare, SECRET)
        latencies: list[float] = []
        for run in range(args.runs + 1):  # the first run warms up (image layers, caches)
            sha = repo.commit(
                {"gobuild.toml": TOML, "n.txt": f"{run} {os.urandom(4).hex()}"}, f"run {run}"
            )
            started = time.perf_counter()
            response = stack.push_webhook(repo.bare, sha, SECRET)
            assert response.status_code == 202, response.text
            accepted = time.perf_counter() - started
            while stack.get_site("bench").text.strip() != sha:
                if time.perf_counter() - started > 120:
                    raise SystemExit(f"run {run}: not live after 120 s\n{stack.tail()}")
                time.sleep(0.01)
            elapsed = time.perf_counter() - started
            label = "warm-up" if run == 0 else f"run {run:2d}"
            print(
                f"{label}: webhook answered in {accepted * 1000:6.1f} ms,"
                f" live after {elapsed:6.2f} s"
            )
            if run:
                latencies.append(elapsed)
    latencies.sort()
    print(
        f"webhook -> live deployment over {len(latencies)} pushes: "
        f"p50 {statistics.median(latencies):.2f} s, p95 {percentile(latencies, 0.95):.2f} s, "
        f"min {latencies[0]:.2f} s, max {latencies[-1]:.2f} s"
    )
    print(f"load average (1, 5, 15 min) after: {load_average()}")


if __name__ == "__main__":
    main()
