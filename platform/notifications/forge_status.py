"""Commit statuses on GitHub and GitLab: which state a build shows and the API request that
sets it.

GitHub: `POST {api}/repos/{owner}/{repo}/statuses/{sha}` with `state` pending, success,
failure or error (docs.github.com/rest/commits/statuses). GitLab: `POST
{base}/api/v4/projects/{url-encoded path}/statuses/{sha}` with `state` pending, running,
success, failed or canceled (docs.gitlab.com/api/commits/#set-the-pipeline-status-of-a-commit).
Both name the status `gobuild`, link the build page and say what happened in a short line.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal
from urllib.parse import quote, urlsplit

from gobuild.platform.build_state import BuildState

Forge = Literal["github", "gitlab"]
# The name of the status on the commit (GitHub's `context`, GitLab's `name`).
STATUS_CONTEXT = "gobuild"
# GitHub refuses a longer description.
MAX_DESCRIPTION_LENGTH = 140

_GITHUB_STATES = {
    BuildState.QUEUED: "pending",
    BuildState.DISPATCHED: "pending",
    BuildState.RUNNING: "pending",
    BuildState.SUCCEEDED: "success",
    BuildState.FAILED: "failure",
    BuildState.TIMED_OUT: "error",
    BuildState.CANCELLED: "error",
}
_GITLAB_STATES = {
    BuildState.QUEUED: "pending",
    BuildState.DISPATCHED: "pending",
    BuildState.RUNNING: "running",
    BuildState.SUCCEEDED: "success",
    BuildState.FAILED: "failed",
    BuildState.TIMED_OUT: "failed",
    BuildState.CANCELLED: "canceled",
}
# Later states of one commit status replace earlier ones that were not sent yet.
_RANKS = {"pending": 1, "running": 2}
TERMINAL_RANK = 3


def forge_state(forge: Forge, state: BuildState) -> str:
    """The forge's commit status state for a build state."""
    return (_GITHUB_STATES if forge == "github" else _GITLAB_STATES)[state]


def state_rank(forge_state: str) -> int:
    return _RANKS.get(forge_state, TERMINAL_RANK)


def describe(
    state: BuildState,
    *,
    number: int | None,
    step: str | None = None,
    deployment_url: str | None = None,
) -> str:
    """The status's one-line description: on success with the deployment URL."""
    build = f"Build #{number}" if number is not None else "Build"
    text = {
        BuildState.QUEUED: f"{build} is queued",
        BuildState.DISPATCHED: f"{build} is queued",
        BuildState.RUNNING: f"{build} is running",
        BuildState.SUCCEEDED: f"{build} succeeded",
        BuildState.FAILED: f"{build} failed" + (f" at step {step}" if step else ""),
        BuildState.TIMED_OUT: f"{build} timed out",
        BuildState.CANCELLED: f"{build} was cancelled",
    }[state]
    if state == BuildState.SUCCEEDED and deployment_url:
        text = f"Deployed to {deployment_url}"
    if len(text) > MAX_DESCRIPTION_LENGTH:
        text = text[: MAX_DESCRIPTION_LENGTH - 1] + "…"
    return text


def repository_path(repo_url: str) -> str | None:
    """`owner/name` (GitLab: `group/subgroup/name`) of an http(s) repository URL; None for a
    local path or a URL without one."""
    if "://" not in repo_url:
        return None
    path = urlsplit(repo_url).path.strip("/").removesuffix(".git").strip("/")
    return path if "/" in path else None


@dataclass(frozen=True)
class StatusRequest:
    """The HTTP request that sets one commit status."""

    url: str
    headers: dict[str, str]
    body: dict[str, str]


def status_request(
    forge: Forge,
    base_url: str,
    repo_path: str,
    sha: str,
    token: str,
    state: str,
    *,
    target_url: str,
    description: str,
) -> StatusRequest:
    """The request for `forge` at `base_url` (GitHub's API URL, GitLab's instance URL)."""
    base_url = base_url.rstrip("/")
    if forge == "github":
        owner_and_name = "/".join(quote(part, safe="") for part in repo_path.split("/")[:2])
        return StatusRequest(
            url=f"{base_url}/repos/{owner_and_name}/statuses/{sha}",
            headers={
                "Authorization": f"Bearer {token}",
                "Accept": "application/vnd.github+json",
                "X-GitHub-Api-Version": "2022-11-28",
            },
            body={
                "state": state,
                "target_url": target_url,
                "description": description,
                "context": STATUS_CONTEXT,
            },
        )
    return StatusRequest(
        url=f"{base_url}/api/v4/projects/{quote(repo_path, safe='')}/statuses/{sha}",
        headers={"PRIVATE-TOKEN": token},
        body={
            "state": state,
            "target_url": target_url,
            "description": description,
            "name": STATUS_CONTEXT,
        },
    )
