"""A build's repository: opened under the policy its job carries, with its credentials
decrypted right before git needs them, and checked out by git in a clone container."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
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
    clone_spec,
    open_remote,
)
from gobuild.builder_agent.container import (
    LABEL_BUILD_ID,
    LABEL_BUILDER_ID,
    ExecSession,
    ensure_image,
    parse_user,
)
from gobuild.builder_agent.warm_containers import (
    KEEPER_CAPABILITIES,
    MAIN_USER,
    ContainerNotClean,
    WarmContainer,
    WarmContainers,
    WarmKey,
)
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
        warm: WarmContainers | None = None,
    ) -> None:
        self.settings = settings
        self.builder_id = builder_id
        self.docker = docker_client
        self.credentials = credentials
        self.ca_trust = ca_trust
        # Clone containers kept for the next build of a project (None: never kept).
        self.warm = warm if settings.build_steps_in_clone_container else None

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
        try:
            return await self._check_out(run, remote, head_of, contained_in, reuse=True)
        except ContainerNotClean as exc:
            # Whatever the earlier build left, this one starts afresh in a new container.
            assert run.warm is not None and self.warm is not None
            self.warm.discard_later(run.warm)
            run.drop_warm()
            await run.logs.system(
                f"The warm container was not clean ({exc}); checking out in a new container"
            )
            return await self._check_out(run, remote, head_of, contained_in, reuse=False)

    async def _check_out(
        self,
        run: BuildRun,
        remote: GitRemote,
        head_of: str | None,
        contained_in: str | None,
        *,
        reuse: bool,
    ) -> CheckoutFacts:
        request = run.request
        # Kept for the steps: then also a local repository's checkout is on the build network.
        keep = run.keep_clone_session if self.settings.build_steps_in_clone_container else None
        warm: WarmContainer | None = None
        if self.warm is not None and parse_user(remote.container.user)[0] != 0:
            remote, warm, keep = await self._warm_container(run, remote, reuse=reuse)
        container = remote.container
        if warm is None:  # a warm container runs already: its image is no question
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
        where = "a clone container"
        if warm is not None:
            where = f"a warm container of this project (build {warm.uses} in it)"
        await run.logs.system(
            f"Checking out in {where}: image {container.image}, user {container.user}, {reach}"
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
            warm=warm.session if warm is not None else None,
            cleaning=warm.cleaning if warm is not None else None,
            # The first step runs in the checkout's own exec (held_exec.py).
            hold=True,
        )

    async def _warm_container(
        self, run: BuildRun, remote: GitRemote, *, reuse: bool
    ) -> tuple[GitRemote, WarmContainer | None, Callable[[ExecSession], None]]:
        """The build checks out in a warm container of its project if one is idle or being
        given back (and `reuse`; the build's workspace becomes its folder), else in a new one
        that is kept at
        its end: the remote with the warm container's labels and users, the one taken (if
        any) and what keeps a new one."""
        pool = self.warm
        assert pool is not None
        project_id = run.request.project_id
        container = replace(remote.container, labels=pool.labels(project_id), main_user=MAIN_USER)
        spec = clone_spec(
            replace(remote, container=container), run.workspace, purpose="checkout", kept=True
        )
        key = WarmKey.of(project_id, spec)
        warm = await pool.take_soon(key) if reuse else None
        if warm is not None:
            run.use_warm(warm)
            return replace(remote, container=container), warm, run.keep_clone_session
        folder = pool.new_folder()
        argv, mounts = pool.keeper(parse_user(container.user)[0], folder)
        container = replace(
            container,
            main_argv=argv,
            main_capabilities=KEEPER_CAPABILITIES,
            main_mounts=mounts,
        )
        run.workspace = folder

        def keep(session: ExecSession) -> None:
            run.use_warm(pool.adopt(key, session, folder))

        return replace(remote, container=container), None, keep
