"""A build's repository: opened under the policy its job carries, with its credentials
decrypted right before git needs them, and checked out by git in a clone container."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import docker

from gobuild.builder_agent.build_run import BuildRun
from gobuild.builder_agent.ca_trust import NO_EXTRA_TRUST, BuildCaTrust
from gobuild.builder_agent.checkout import (
    CheckoutError,
    CheckoutFacts,
    CloneContainer,
    GitRemote,
    checkout_with_facts,
    open_remote,
)
from gobuild.builder_agent.container import LABEL_BUILD_ID, LABEL_BUILDER_ID, ensure_image
from gobuild.platform.config import Settings
from gobuild.platform.repo_credentials import RepoCredentialCipher, UnreadableCredentials
from gobuild.platform.repo_url import RepoSourcePolicy


class SourceCheckout:
    """Opens a build's repository and checks its commit out into the build's workspace."""

    def __init__(
        self,
        settings: Settings,
        builder_id: str,
        docker_client: docker.DockerClient,
        credentials: RepoCredentialCipher,
        ca_trust: BuildCaTrust = NO_EXTRA_TRUST,
    ) -> None:
        self.settings = settings
        self.builder_id = builder_id
        self.docker = docker_client
        self.credentials = credentials
        self.ca_trust = ca_trust

    async def open_remote(self, run: BuildRun) -> GitRemote:
        """The build's repository, checked against the policy now: local paths and internal
        hosts only for projects an admin registered (local paths only while this builder's
        GOBUILD_ALLOW_LOCAL_REPOS is on); CheckoutError otherwise."""
        request = run.request
        userinfo = None
        if request.repo_credentials:
            try:
                userinfo = self.credentials.decrypt(request.repo_credentials)
            except UnreadableCredentials as exc:
                raise CheckoutError(str(exc)) from None
        return await open_remote(
            request.repo_url,
            policy=RepoSourcePolicy.for_settings(self.settings, trusted=request.trusted_source),
            container=replace(
                CloneContainer.for_settings(
                    self.docker,
                    self.settings,
                    labels={LABEL_BUILD_ID: run.build_id, LABEL_BUILDER_ID: self.builder_id},
                    ca_trust=self.ca_trust,
                ),
                # The build's own limits (its project's): the steps may run in this container.
                memory_mb=request.config.memory_mb,
                cpus=request.config.cpus,
                pids_limit=request.config.pids_limit,
            ),
            credentials=userinfo,
        )

    async def check_out(
        self,
        run: BuildRun,
        remote: GitRemote,
        *,
        head_of: str | None = None,
        contained_in: str | None = None,
    ) -> CheckoutFacts:
        """Check out the build's commit into its workspace and, in the same clone container,
        look up branch `head_of` on the remote and whether commit `contained_in` contains the
        one checked out (`checkout_with_facts`)."""
        request, container = run.request, remote.container
        # Kept for the steps: then also a local repository's checkout is on the build network.
        keep = run.keep_clone_session if self.settings.build_steps_in_clone_container else None
        await ensure_image(
            self.docker,
            container.image,
            pull_policy=self.settings.build_pull_policy,
            timeout=self.settings.build_pull_timeout_seconds,
            on_pull=run.logs.system,
        )
        reach = f"network {container.network}"
        if remote.local_path is not None:
            network = "no network" if keep is None else reach
            reach = f"the repository mounted read-only at /source, {network}"
        await run.logs.system(
            f"Checking out in a clone container: image {container.image}, user "
            f"{container.user}, {reach}"
        )
        return await checkout_with_facts(
            remote,
            run.workspace,
            commit_sha=request.commit_sha,
            ref=request.ref,
            branch=request.branch,
            # The caller's deadline comes first and reports it as the build's time limit.
            timeout=max(1.0, run.deadline - asyncio.get_running_loop().time()) + 5,
            head_of=head_of,
            contained_in=contained_in,
            removals=run.removals,
            keep=keep,
        )
