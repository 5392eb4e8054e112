"""How long a line printed in a build container takes to appear in the dashboard page, measured
in the browser; and how much memory the dashboard process holds while a browser follows a
100,000-line build.

Starts `gobuild dev`, signs a user in with Chromium (Playwright), opens the page of a build whose
step prints the time (epoch milliseconds) every 200 ms, and records in the page, as each line is
added to the console, how far behind the time in it the browser's clock is (same machine, same
clock). Then follows a build printing 100,000 lines and samples the dashboard's resident memory.
Run: `.venv/bin/python bench/dashboard_latency.py [--big-lines 100000]`.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from playwright.sync_api import Page, sync_playwright

from gobuild.platform.localstack import BUILD_IMAGE, GitRepo, Stack, start_stack

SECRET = "bench-webhook-secret-0123456789"
PASSWORD = "bench-password-0123"
TICKS = 50
TICK_TOML = (
    f"build = 'for i in $(seq {TICKS}); do echo \"tick $(date +%s%3N)\"; sleep 0.2; done'\n"
    "output = '.'\n"
)
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# Runs in the page: the delay of every console line that carries a time, as it is added.
OBSERVE_TICKS = """
window.__tickDelays = [];
new MutationObserver((changes) => {
  const now = Date.now();
  for (const change of changes) for (const node of change.addedNodes) {
    const text = node.querySelector && node.querySelector('.gb-text');
    const match = text && /^tick (\\d+)$/.exec(text.textContent);
    if (match) window.__tickDelays.push(now - Number(match[1]));
  }
}).observe(document.querySelector('[data-testid=log] .gb-log-lines'), {childList: true});
"""


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, round(share * len(ordered)) - 1)]


def dashboard_pid(stack: Stack) -> int:
    """The dashboard child of this `gobuild dev` (by its command line)."""
    for children in Path(f"/proc/{stack.process.pid}/task").glob("*/children"):
        for pid in children.read_text().split():
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            if b"gobuild.ui" in cmdline:
                return int(pid)
    raise RuntimeError("no dashboard process found")


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def push(stack: Stack, repo: GitRepo, toml: str, message: str) -> str:
    sha = repo.commit({"gobuild.toml": toml, "index.html": message}, message)
    response = stack.push_webhook(repo.bare, sha, SECRET)
    response.raise_for_status()
    return response.json()["build_id"]


def sign_in(page: Page, base: str) -> None:
    page.goto(f"{base}/sign-in")
    page.get_by_test_id("username").fill("bench")
    page.get_by_test_id("password").fill(PASSWORD)
    page.get_by_test_id("sign-in").click()
    page.wait_for_url(lambda url: "/sign-in" not in url)


def wait_finished(stack: Stack, build_id: str, timeout: float) -> dict:
    return stack.wait_for_build(build_id, timeout=timeout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--big-lines", type=int, default=100_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        run(Path(tmp), args.big_lines)


def run(root: Path, big_lines: int) -> None:
    repo = GitRepo.create(root / "repo")
    stack = start_stack(
        root / "data",
        BUILD_IMAGE,
        # The 100,000 lines are printed at once; keep every one of them.
        GOBUILD_BUILD_LOG_MAX_LINES_PER_SECOND=str(big_lines),
        GOBUILD_BUILD_LOG_LINE_BURST=str(big_lines),
    )
    try:
        project = stack.create_project("bench", repo.bare, SECRET)
        stack.http.post("/api/users", json={"username": "bench", "password": PASSWORD})
        stack.http.post(
            f"/api/projects/{project['id']}/members", json={"username": "bench", "role": "owner"}
        )
        base = f"http://localhost:{stack.env['GOBUILD_DASHBOARD_PORT']}"
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS
            )
            page = browser.new_page()
            page.set_default_timeout(60_000)
            sign_in(page, base)

            build_id = push(stack, repo, TICK_TOML, "ticks")
            page.goto(f"{base}/builds/{build_id}")
            page.wait_for_selector("[data-testid=log] .gb-log-lines", state="attached")
            page.evaluate(OBSERVE_TICKS)
            wait_finished(stack, build_id, 180)
            time.sleep(1)
            delays = page.evaluate("window.__tickDelays")
            print(
                f"container line -> page: {len(delays)} of {TICKS} lines seen live; "
                f"median {statistics.median(delays):.0f} ms, "
                f"p95 {percentile(delays, 0.95):.0f} ms, max {max(delays):.0f} ms"
            )

            pid = dashboard_pid(stack)
            page.goto(f"{base}/builds")
            time.sleep(2)
            before = rss_mib(pid)
            big_toml = f"build = 'seq 1 {big_lines}'\noutput = '.'\n"
            build_id = push(stack, repo, big_toml, "many lines")
            page.goto(f"{base}/builds/{build_id}")
            peak = before
            deadline = time.monotonic() + 600
            while time.monotonic() < deadline:
                peak = max(peak, rss_mib(pid))
                if stack.http.get(f"/api/builds/{build_id}").json()["state"] in (
                    "succeeded",
                    "failed",
                ):
                    break
                time.sleep(0.5)
            ended = time.monotonic()
            stored = stack.http.get(f"/api/builds/{build_id}/logs").text.count("\n")
            total = ""
            while time.monotonic() < ended + 300 and total != f"{stored} lines":
                peak = max(peak, rss_mib(pid))
                total = page.get_by_test_id("line-count").inner_text()
                time.sleep(0.5)
            caught_up = time.monotonic() - ended
            held = page.locator("[data-testid=log] .gb-line").count()
            page.goto(f"{base}/builds")
            time.sleep(15)
            after = rss_mib(pid)
            print(
                f"dashboard memory following a {big_lines}-line build: "
                f"before {before:.0f} MiB, peak {peak:.0f} MiB, after leaving {after:.0f} MiB; "
                f"the page showed {total} ({caught_up:.1f} s after the build ended) "
                f"and held {held} of them"
            )
            browser.close()
    finally:
        stack.stop()


if __name__ == "__main__":
    main()
