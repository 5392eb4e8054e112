"""The build pipeline: checkout → steps in containers → artifact → deployment.

Each stage runs under the build's deadline and stops when the build is cancelled; the result
is an `Outcome`, never an exception, except when the builder itself is stopping.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace
from typing import TypeVar

import docker

from gobuild.builder_agent.artifacts import ArtifactError, find_output, pack_output
from gobuild.builder_agent.build_caches import BuildCaches, RunCaches
from gobuild.builder_agent.build_run import BuildRun, BuildStopped, Outcome, guard
from gobuild.builder_agent.ca_trust import NO_EXTRA_TRUST, BuildCaTrust
from gobuild.builder_agent.checkout import CheckoutError, CheckoutFacts, GitRemote, redact_url
from gobuild.builder_agent.container import (
    ContainerError,
    ExecSession,
    ensure_image,
    hand_workspace_to,
    image_source,
    normalize_image,
)
from gobuild.builder_agent.repo_config import (
    BuildPlan,
    RepoConfigError,
    resolve_plan,
    source_folder,
)
from gobuild.builder_agent.reporter import BuildReporter
from gobuild.builder_agent.rollback_guard import (
    branch_to_check,
    production_commit,
    promote_forward,
    superseded_reason,
)
from gobuild.builder_agent.source_checkout import SourceCheckout
from gobuild.builder_agent.steps import StepRunner
from gobuild.builder_agent.warm_containers import WarmContainers
from gobuild.platform.build_state import BuildState
from gobuild.platform.config import Settings
from gobuild.platform.records import Deployment, new_deployment_id
from gobuild.platform.repo_credentials import RepoCredentialCipher, SecretCipher
from gobuild.platform.storage_client import StorageClient, StorageError
from gobuild.platform.stores.deployment_records import DeploymentRecords

log = logging.getLogger(__name__)

T = TypeVar("T")


class BuildPipeline:
    """Runs one build attempt from checkout to deployment."""

    def __init__(
        self,
        settings: Settings,
        builder_id: str,
        docker_client: docker.DockerClient,
        storage: StorageClient,
        deployments: DeploymentRecords,
        reporter: BuildReporter,
        credentials: RepoCredentialCipher,
        *,
        build_secrets: SecretCipher,
        ca_trust: BuildCaTrust = NO_EXTRA_TRUST,
        caches: BuildCaches | None = None,
        warm: WarmContainers | None = None,
    ) -> None:
        self.settings = settings
        self.builder_id = builder_id
        self.docker = docker_client
        self.storage = storage
        self.deployments = deployments
        self.reporter = reporter
        self.build_secrets = build_secrets
        self.ca_trust = ca_trust
        self.caches = caches
        self.warm = warm
        self.sources = SourceCheckout(
            settings, builder_id, docker_client, credentials, ca_trust, warm=warm
        )
        self.steps = StepRunner(
            settings, builder_id, docker_client, reporter, build_secrets, ca_trust
        )

    async def execute(self, run: BuildRun) -> Outcome:
        try:
            outcome = await self._outcome(run)
        finally:
            # A build holds no container once it ends, even one that was being removed; a warm
            # one goes back to be made as good as new for the project's next build.
            run.release_clone_session()
            await run.removals.wait()
            if run.warm is not None and self.warm is not None:
                self.warm.give_back(run.warm)
        if outcome.reason:
            # The reason is shown beside the log (and in alerts): its secrets are masked too.
            outcome.reason = run.logs.secrets.apply(outcome.reason)
        return outcome

    async def _outcome(self, run: BuildRun) -> Outcome:
        try:
            return await self._build_and_deploy(run)
        except BuildStopped as stop:
            return Outcome(stop.state, stop.reason)
        except (CheckoutError, RepoConfigError, ContainerError, ArtifactError, StorageError) as exc:
            return Outcome(BuildState.FAILED, str(exc))
        except Exception as exc:
            log.exception("build %s: unexpected error", run.build_id)
            return Outcome(BuildState.FAILED, f"internal builder error ({type(exc).__name__})")

    async def _build_and_deploy(self, run: BuildRun) -> Outcome:
        request, logs, settings = run.request, run.logs, self.settings

        # The build's start (from `dispatched`, or again after a lost builder) and its first step.
        await self.reporter.status(run, BuildState.RUNNING, step="checkout")
        target = request.commit_sha or request.branch or request.ref
        await logs.system(f"Cloning {redact_url(request.repo_url)} ({target})")
        # Every later contact with the repository goes through this one `remote`: the policy
        # checked it now, and its addresses are pinned.
        remote = await guard(run, self.sources.open_remote(run))
        # The checkout's own git session also answers the rollback guard's questions: is the
        # pushed commit still its branch's head, and does production's commit contain it.
        served = None
        if request.production:
            served = await production_commit(self.deployments, request.project_id)
        facts = await guard(
            run,
            self.sources.check_out(
                run, remote, head_of=branch_to_check(request), contained_in=served
            ),
        )
        run.commit_sha = facts.commit_sha
        await logs.system(f"Checked out commit {run.commit_sha}")
        await self._stop_if_superseded(run, remote, facts)

        plan = await asyncio.to_thread(resolve_plan, run.workspace, request.config)
        if plan.timeout_seconds < run.timeout_seconds:
            run.deadline = run.started + plan.timeout_seconds
            run.timeout_seconds = plan.timeout_seconds
        await self._describe_plan(run, plan)
        if plan.dockerfile or not plan.steps:
            run.release_clone_session()  # not needed (a Dockerfile's image may take a while)

        image = plan.image
        caches: RunCaches | None = None
        if plan.steps:
            image, cache_image = await self._step_image(run, plan)
            if self.caches is not None:
                # Restored before the workspace is handed to the build user, who then owns it.
                caches = self.caches.for_run(run, plan.root_dir, cache_image, plan.cache_folders)
                await guard(run, caches.restore_dependencies())
                plan = replace(plan, env={**caches.env, **plan.env})
            await hand_workspace_to(run.workspace, settings.build_user)
        session = self._session_for_steps(run, plan, image)
        for step, command in plan.steps:
            if caches is not None and step != "install":
                await guard(run, caches.restore_build_folders())
            await self.steps.run(run, plan, image, step, command, session=session)
        await self.reporter.status(run, BuildState.RUNNING, step="upload")
        await self._stop_leftovers(run)
        # Checked again: the steps may have replaced the folder with a link out of the workspace.
        source = await asyncio.to_thread(source_folder, run.workspace, plan.root_dir)
        output_dir = await asyncio.to_thread(find_output, source, plan.output)
        shown = output_dir.relative_to(run.workspace.resolve()).as_posix()
        await logs.system(f"Packing output folder '{shown}'")
        packed = await guard(run, pack_output(output_dir, run.archive))
        for skipped in packed.skipped:
            await logs.system(f"Skipped {skipped}")
        artifact = await guard(run, self.storage.upload_artifact(run.build_id, packed))
        await logs.system(
            f"Uploaded artifact: {packed.files} files, {packed.size} bytes, sha256 {packed.sha256}"
        )

        await self.reporter.status(run, BuildState.RUNNING, step="deploy")
        deployment = await self._deploy(run, remote, facts)
        if caches is not None:
            await self._save_caches(run, caches)
        return Outcome(
            BuildState.SUCCEEDED,
            artifact=artifact,
            deployment_id=deployment.id,
            deployment_url=deployment.url,
        )

    async def _stop_leftovers(self, run: BuildRun) -> None:
        """Nothing the steps left running in the build's container (a process in the
        background) may change the output while it is packed: a warm container's keeper kills
        them, a kept clone container is removed first. A step's own container took its
        processes with it when its command ended."""
        released = run.clone_session is not None and run.warm is None
        run.release_clone_session()
        if run.warm is not None and self.warm is not None:
            if not await self.warm.stop_processes(run.warm):
                await run.logs.system("Processes the steps left could not all be stopped")
        elif released:
            await run.removals.wait()

    @staticmethod
    def _session_for_steps(run: BuildRun, plan: BuildPlan, image: str) -> ExecSession | None:
        """The clone container kept after the checkout (still kept only for steps without a
        `dockerfile`), if the steps can run in it: the image they run in is its image (by name,
        not a fresh pull), with the same limits. Otherwise it is removed now and each step gets
        a container of its own."""
        session = run.clone_session
        if session is None:
            return None
        spec = session.spec
        limits = (plan.memory_mb, plan.cpus, plan.pids_limit)
        if image == spec.image and limits == (spec.memory_mb, spec.cpus, spec.pids_limit):
            return session
        run.release_clone_session()
        return None

    async def _step_image(self, run: BuildRun, plan: BuildPlan) -> tuple[str, str]:
        """The image the steps run in, and the name dependency caches are keyed by."""
        settings = self.settings
        if plan.dockerfile:
            if self.caches is None:
                raise RepoConfigError("this builder cannot build a `dockerfile` (no layer cache)")
            source = await asyncio.to_thread(source_folder, run.workspace, plan.root_dir)
            layer = await guard(
                run,
                self.caches.layers.image_for(run, source, plan.dockerfile, plan.memory_mb),
            )
            run.caches.append(layer.use)
            # Built here for this project: it runs by id, outside the image policy.
            return layer.image_id, layer.tag
        kept = run.clone_session
        trusted = settings.trusted_build_images
        origin = image_source(plan.image, pull_policy=settings.build_pull_policy, trusted=trusted)
        if kept is not None and origin == "local" and kept.spec.image == plan.image:
            # The steps run in the container the checkout ran in, which has that image.
            return plan.image, normalize_image(plan.image)
        # The image policy: an untrusted image runs by the id of a fresh pull, never as a
        # local copy of that name (which may be another project's).
        image = await guard(
            run,
            ensure_image(
                self.docker,
                plan.image,
                pull_policy=settings.build_pull_policy,
                timeout=settings.build_pull_timeout_seconds,
                on_pull=run.logs.system,
                trusted=trusted,
            ),
        )
        return image, normalize_image(plan.image)

    async def _save_caches(self, run: BuildRun, caches: RunCaches) -> None:
        """After the deployment: the time limit or a cancel cuts saving short, and the build
        stays succeeded."""
        try:
            await guard(run, caches.save())
        except BuildStopped as stop:
            await run.logs.system(f"Caches not saved: {stop.reason}")

    async def _describe_plan(self, run: BuildRun, plan: BuildPlan) -> None:
        steps = ", ".join(name for name, _ in plan.steps) or "none"
        output = plan.output or "dist or build (detected after the build)"
        detected = f"Detected {plan.detected}. " if plan.detected else ""
        folder = "" if plan.root_dir == "." else f"; folder {plan.root_dir}"
        await run.logs.system(
            f"{detected}Image {plan.image}{folder}; steps: {steps}; output: {output}; "
            f"time limit {run.timeout_seconds} s"
        )
        for name, command in plan.steps:
            await run.logs.system(f"  {name}: {command}")
        config = run.request.config
        if config.env or plan.secret_env:
            names = ", ".join(sorted(config.env)) or "none"
            secret = ", ".join(sorted(plan.secret_env)) or "none"
            await run.logs.system(f"Project variables: {names}; secret: {secret}")

    async def _stop_if_superseded(
        self, run: BuildRun, remote: GitRemote, facts: CheckoutFacts
    ) -> None:
        """A pushed commit that is no longer its branch's head (a replayed or late delivery)
        is not built: it would deploy old code over newer."""
        time_left = max(1.0, run.deadline - asyncio.get_running_loop().time()) + 5
        reason = await guard(
            run,
            superseded_reason(
                run.request, remote, run.commit_sha, run.workspace, timeout=time_left, facts=facts
            ),
        )
        if reason:
            await run.logs.system(f"Not built: {reason}")
            raise BuildStopped(BuildState.CANCELLED, reason)

    async def _deploy(self, run: BuildRun, remote: GitRemote, facts: CheckoutFacts) -> Deployment:
        request, settings = run.request, self.settings
        deployment_id = new_deployment_id(request.project_name)
        await guard(run, self.storage.deploy(deployment_id, run.build_id))
        deployment = Deployment(
            id=deployment_id,
            project_id=request.project_id,
            build_id=run.build_id,
            number=request.number,
            branch=request.branch,
            commit_sha=run.commit_sha,
            url=settings.deployment_url(deployment_id),
        )
        await self.deployments.create(deployment)
        await run.logs.system(f"Deployed to {deployment.url}")
        promoted = False
        try:
            promoted = request.production and await promote_forward(
                self.deployments,
                deployment,
                remote=remote,
                history_dir=run.workspace.with_name(f"{run.workspace.name}.history"),
                deadline=run.deadline,
                say=run.logs.system,
                facts=facts,
            )
        finally:
            # Told after the alias is decided, so production goes live without waiting for the
            # broker; still in their order (created, ready, then promoted).
            for state in ("created", "ready"):
                await self.reporter.deployment(deployment, state)
        if promoted:
            alias_url = settings.deployment_url(request.project_name)
            await self.reporter.deployment(deployment, "promoted", alias_url)
            await run.logs.system(f"Promoted to production: {alias_url}")
        return deployment
