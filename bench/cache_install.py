"""The dependency cache's effect on the install step: cold (caches cleared first) against warm
(a dependency cache hit), p50 of N builds each, with the cache's restore time and size.

Three npm projects: the Vite project of the tests (tests/fixtures/vite-site, built with `vite
build`), the small one (tests/fixtures/npm-site) and one of at least 300 packages (vite,
typescript, eslint and their dependencies), whose lockfile this machine's npm writes first
(`npm install --package-lock-only`). Builds install from the real npm registry.

`--breakdown` also times `npm ci` alone in the build image, outside GoBuild (p50 of N): npm's
start, cold, warm, warm offline, and warm with node_modules on a tmpfs instead of the
workspace's disk, which shows where a warm install's time goes.
Run: `.venv/bin/python bench/cache_install.py [--runs 5] [--only vite] [--breakdown]
[--install "npm ci --no-audit --no-fund"]`.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gobuild.platform.localstack import BUILD_IMAGE, GitRepo, Stack, start_stack

SECRET = "bench-webhook-secret-0123456789"
FIXTURES = Path(__file__).resolve().parents[1] / "tests" / "fixtures"
NPM_SITE = FIXTURES / "npm-site"
VITE_SITE = FIXTURES / "vite-site"
VITE_FILES = (
    "package.json",
    "package-lock.json",
    "index.html",
    "src/main.js",
    "src/greeting.js",
    "src/style.css",
)
HOST_CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
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


def vite_project() -> dict[str, str]:
    return {name: (VITE_SITE / name).read_text() for name in VITE_FILES}


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


def measure(
    stack: Stack, root: Path, name: str, files: dict[str, str], runs: int, install: str | None
) -> Figures:
    repo = GitRepo.create(root / name)
    project = stack.create_project(name, repo.bare, SECRET)
    if install:
        response = stack.http.patch(
            f"/api/projects/{project['id']}", json={"install_command": install}
        )
        assert response.status_code == 200, response.text
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


def npm_ci_seconds(folder: Path, options: str, *, tmpfs: bool = False) -> float:
    """`npm ci` (or, with options "--version", npm's start alone) in the build image, as a
    step runs it but without GoBuild: the project and its npm cache are `folder`'s; with
    `tmpfs` they are copied to a tmpfs first and installed there."""
    remove_as_root(folder / "node_modules")
    inside = "/w"
    mounts = ["-v", f"{folder}:/src" if tmpfs else f"{folder}:/w"]
    prepare = ""
    if tmpfs:
        mounts += ["--tmpfs", "/w:rw,exec,size=2g"]
        prepare = "cp /src/package.json /src/package-lock.json /w/ && cp -r /src/.cache /w/ && "
    command = "npm --version" if options == "--version" else f"npm ci {options}"
    script = (
        f"{prepare}s=$(date +%s%N); {command} >/tmp/out 2>&1 || {{ tail /tmp/out; exit 1; }}; "
        "e=$(date +%s%N); echo $(( (e - s) / 1000000 ))"
    )
    result = subprocess.run(
        [
            "docker",
            "run",
            "--rm",
            *mounts,
            "-w",
            inside,
            "-e",
            "HOME=/tmp",
            "-e",
            f"npm_config_cache={inside}/.cache/npm",
            "-e",
            "NODE_EXTRA_CA_CERTS=/etc/gobuild-ca.crt",
            "-v",
            f"{HOST_CA_BUNDLE}:/etc/gobuild-ca.crt:ro",
            BUILD_IMAGE,
            "bash",
            "-c",
            script,
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if result.returncode != 0:
        raise SystemExit(f"npm in the build image failed:\n{result.stdout}{result.stderr}")
    return int(result.stdout.strip().splitlines()[-1]) / 1000


def remove_as_root(path: Path) -> None:
    # The container's files are root's: remove them with the image's tools, as root.
    if path.exists():
        subprocess.run(
            [
                "docker",
                "run",
                "--rm",
                "-v",
                f"{path.parent}:/p",
                BUILD_IMAGE,
                "rm",
                "-rf",
                f"/p/{path.name}",
            ],
            check=True,
            timeout=300,
        )


def breakdown(root: Path, name: str, files: dict[str, str], runs: int) -> None:
    """Where a warm `npm ci` spends its time, p50 of `runs` each."""
    folder = root / f"{name}-breakdown"
    folder.mkdir()
    for file in ("package.json", "package-lock.json"):
        (folder / file).write_text(files[file])
    fast = "--prefer-offline --no-audit --no-fund"
    cases: dict[str, list[float]] = {}
    for _ in range(runs):
        remove_as_root(folder / ".cache")
        cases.setdefault("cold npm ci", []).append(npm_ci_seconds(folder, ""))
    for label, options, tmpfs in (
        ("npm start (npm --version)", "--version", False),
        ("warm npm ci", "", False),
        ("warm npm ci --prefer-offline", "--prefer-offline", False),
        (f"warm npm ci {fast}", fast, False),
        (f"warm npm ci {fast} --ignore-scripts", f"{fast} --ignore-scripts", False),
        (f"warm npm ci {fast}, on tmpfs", fast, True),
    ):
        cases[label] = [npm_ci_seconds(folder, options, tmpfs=tmpfs) for _ in range(runs)]
    remove_as_root(folder / "node_modules")
    print(f"{name}: npm ci in {BUILD_IMAGE} without GoBuild, p50 of {runs}:")
    for label, seconds in cases.items():
        each = " ".join(f"{value:.2f}" for value in seconds)
        print(f"  {label}: {statistics.median(seconds):.2f} s  ({each})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--only", choices=("vite", "small", "large"), action="append")
    parser.add_argument("--install", help="the projects' install command instead of npm ci")
    parser.add_argument("--breakdown", action="store_true", help="also time npm ci alone")
    args = parser.parse_args()
    chosen = args.only or ["vite", "small", "large"]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        projects: dict[str, dict[str, str]] = {}
        if "vite" in chosen:
            projects["bench-vite"] = vite_project()
        if "small" in chosen:
            projects["bench-small"] = small_project()
        if "large" in chosen:
            (root / "large").mkdir()
            projects["bench-large"] = large_project(root / "large")
        started = time.monotonic()
        stack = start_stack(root / "data", BUILD_IMAGE, GOBUILD_BUILD_MEMORY_MB="2048")
        try:
            results = [
                measure(stack, root, name, files, args.runs, args.install)
                for name, files in projects.items()
            ]
        finally:
            stack.stop()
        if args.breakdown:
            for name, files in projects.items():
                breakdown(root, name, files, args.runs)
        print(f"(measured in {time.monotonic() - started:.0f} s)")
    for figures in results:
        report(figures)


if __name__ == "__main__":
    main()
