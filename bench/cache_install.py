"""The dependency cache's effect on the install step: cold (caches cleared first) against warm
(a dependency cache hit), p50 of N builds each, with the cache's restore time and size.

Two npm projects: the small one of the tests (tests/fixtures/npm-site) and one of at least 300
packages (vite, typescript, eslint and their dependencies), whose lockfile this machine's npm
writes first (`npm install --package-lock-only`). Builds install from the real npm registry.
Run: `.venv/bin/python bench/cache_install.py [--runs 5]`.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gobuild.platform.localstack import BUILD_IMAGE, GitRepo, Stack, start_stack

SECRET = "bench-webhook-secret-0123456789"
NPM_SITE = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "npm-site"
BUILD_SCRIPT = (
    "node -e \"require('fs').mkdirSync('dist',{recursive:true});"
    "require('fs').writeFileSync('dist/index.html','ok')\""
)
LARGE_DEPENDENCIES = {
    "vite": "6.3.5",
    "typescript": "5.8.3",
    "eslint": "9.28.0",
    "@typescript-eslint/parser": "8.33.1",
    "@typescript-eslint/eslint-plugin": "8.33.1",
    "eslint-plugin-import": "2.31.0",
    "prettier": "3.5.3",
    "vitest": "3.2.2",
}
INSTALL_LINE = re.compile(r"Step 'install' finished in ([0-9.]+)s")


@dataclass
class Figures:
    name: str
    packages: int
    cold: list[float]
    warm: list[float]
    restore: list[float]
    size_bytes: int


def small_project() -> dict[str, str]:
    package = json.loads((NPM_SITE / "package.json").read_text())
    package["scripts"] = {"build": BUILD_SCRIPT}
    return {
        "package.json": json.dumps(package, indent=2),
        "package-lock.json": (NPM_SITE / "package-lock.json").read_text(),
    }


def large_project(folder: Path) -> dict[str, str]:
    """package.json and the lockfile this machine's npm resolves for it."""
    package = {
        "name": "bench-large",
        "version": "1.0.0",
        "private": True,
        "scripts": {"build": BUILD_SCRIPT},
        "devDependencies": LARGE_DEPENDENCIES,
    }
    (folder / "package.json").write_text(json.dumps(package, indent=2))
    subprocess.run(
        [
            "npm",
            "install",
            "--package-lock-only",
            "--omit-lockfile-registry-resolved=false",
            "--no-audit",
            "--no-fund",
        ],
        cwd=folder,
        check=True,
        capture_output=True,
        timeout=300,
    )
    return {
        "package.json": (folder / "package.json").read_text(),
        "package-lock.json": (folder / "package-lock.json").read_text(),
    }


def package_count(lockfile: str) -> int:
    return sum(1 for path in json.loads(lockfile)["packages"] if path)


def build(stack: Stack, project_id: str) -> tuple[dict[str, Any], float]:
    """One API build of the production branch: the build, and its install step's seconds."""
    response = stack.http.post(f"/api/projects/{project_id}/builds", json={})
    assert response.status_code == 202, response.text
    result = stack.wait_for_build(response.json()["build_id"], timeout=900)
    log = stack.http.get(f"/api/builds/{result['id']}/logs").text
    if result["state"] != "succeeded":
        raise SystemExit(f"build {result['id']} {result['state']}:\n{log[-3000:]}")
    match = INSTALL_LINE.search(log)
    assert match, log
    return result, float(match.group(1))


def dependency_use(result: dict[str, Any]) -> dict[str, Any]:
    return next(use for use in result["caches"] if use["kind"] == "dependencies")


def measure(stack: Stack, root: Path, name: str, files: dict[str, str], runs: int) -> Figures:
    repo = GitRepo.create(root / name)
    project = stack.create_project(name, repo.bare, SECRET)
    repo.commit(files, message="project")
    figures = Figures(name, package_count(files["package-lock.json"]), [], [], [], 0)
    for run in range(runs):
        cleared = stack.http.delete(f"/api/projects/{project['id']}/caches")
        assert cleared.status_code == 200, cleared.text
        result, seconds = build(stack, project["id"])
        assert dependency_use(result)["result"] == "miss"
        figures.cold.append(seconds)
        print(f"{name}: cold install {run + 1}: {seconds:.1f} s", flush=True)
    for run in range(runs):
        result, seconds = build(stack, project["id"])
        use = dependency_use(result)
        assert use["result"] == "hit", use
        figures.warm.append(seconds)
        figures.restore.append(use["restore_seconds"])
        figures.size_bytes = use["size_bytes"]
        print(
            f"{name}: warm install {run + 1}: {seconds:.1f} s "
            f"(restore {use['restore_seconds']:.2f} s)",
            flush=True,
        )
    return figures


def report(figures: Figures) -> None:
    cold, warm = statistics.median(figures.cold), statistics.median(figures.warm)
    print(
        f"{figures.name} ({figures.packages} packages): install p50 cold {cold:.1f} s, "
        f"warm {warm:.1f} s ({cold / warm:.1f}x faster); cache restore p50 "
        f"{statistics.median(figures.restore):.2f} s, cache size "
        f"{figures.size_bytes / 1024**2:.1f} MiB"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "large").mkdir()
        large = large_project(root / "large")
        stack = start_stack(root / "data", BUILD_IMAGE, GOBUILD_BUILD_MEMORY_MB="2048")
        try:
            results = [
                measure(stack, root, "bench-small", small_project(), args.runs),
                measure(stack, root, "bench-large", large, args.runs),
            ]
        finally:
            stack.stop()
    for figures in results:
        report(figures)


if __name__ == "__main__":
    main()
