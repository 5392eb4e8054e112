"""The clone container the builder tests check a local repository out in."""

from __future__ import annotations

from typing import Any

import docker

from gobuild.builder_agent.checkout import CloneContainer, GitRemote, open_remote
from gobuild.platform.localstack import GitRepo
from gobuild.platform.repo_url import RepoSourcePolicy
from tests.conftest import BUILD_IMAGE

BUILD_USER = "1000:1000"


async def local_remote(
    git_repo: GitRepo, docker_client: docker.DockerClient, **changes: Any
) -> GitRemote:
    """`git_repo` opened as an admin's project, checked out as the build user in a small
    container with no network (`changes`: other fields of its `CloneContainer`)."""
    container = CloneContainer(
        client=docker_client,
        image=BUILD_IMAGE,
        user=BUILD_USER,
        network="none",
        memory_mb=128,
        pids_limit=128,
        **changes,
    )
    policy = RepoSourcePolicy(trusted=True, local_repos_enabled=True)
    return await open_remote(str(git_repo.bare), policy=policy, container=container)
