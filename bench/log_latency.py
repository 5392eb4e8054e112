"""How long a line printed by a build step takes to reach a client following the log.

Starts `gobuild dev`, runs a build whose step prints the time every 200 ms, follows
`GET /api/builds/{id}/logs?follow=1` and compares each line's arrival with the time in it
(same machine, same clock). Run: `.venv/bin/python bench/log_latency.py`.
"""

from __future__ import annotations

import statistics
import time

import httpx

from gobuild.platform.localstack import ADMIN_KEY, BUILD_IMAGE, stack_with_repository

SECRET = "bench-webhook-secret-0123456789"
LINES = 50
TOML = (
    f"build = 'for i in $(seq {LINES}); do echo \"tick $(date +%s.%N)\"; sleep 0.2; done'\n"
    "output = '.'\n"
)


def main() -> None:
    with stack_with_repository(BUILD_IMAGE) as (stack, repo):
        stack.create_project("ticks", repo.bare, SECRET)
        sha = repo.commit({"gobuild.toml": TOML, "index.html": "x"}, "ticks")
        build_id = stack.push_webhook(repo.bare, sha, SECRET).json()["build_id"]
        delays: list[float] = []
        with httpx.stream(
            "GET",
            f"http://127.0.0.1:{stack.port}/api/builds/{build_id}/logs?follow=1",
            headers={"Authorization": f"Bearer {ADMIN_KEY}"},
            timeout=120.0,
        ) as response:
            for line in response.iter_lines():
                arrived = time.time()
                if line.startswith("tick "):
                    delays.append(arrived - float(line.split()[1]))
    ms = sorted(d * 1000 for d in delays)
    print(
        f"log line latency over {len(ms)} lines (step print -> followed client): "
        f"median {statistics.median(ms):.0f} ms, p95 {ms[int(len(ms) * 0.95) - 1]:.0f} ms, "
        f"max {ms[-1]:.0f} ms"
    )


if __name__ == "__main__":
    main()
