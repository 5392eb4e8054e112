"""The build pipeline: checkout → steps in containers → artifact → deployment.

Each stage runs under the build's deadline and stops when the build is cancelled; the result
is an `Outcome`, never an exception, except when the builder itself is stopping.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine
from dataclasses import replace
from typing import Any, TypeVar

import docker

from gobuild.builder_agent.artifacts import ArtifactError, find_output, pack_output
from gobuild.builder_agent.build_caches import BuildCaches, RunCaches
from gobuild.builder_agent.build_run import BuildRun, BuildStopped, Outcome
from gobuild.builder_agent.ca_trust import NO_EXTRA_TRUST, BuildCaTrust
from gobuild.builder_agent.checkout import CheckoutError, GitRemote, redact_url
from gobuild.builder_agent.container import (
    LABEL_BUILD_ID,
    LABEL_BUILDER_ID,
    LABEL_STEP,
    ContainerError,
    StepSpec,
    ensure_image,
    hand_workspace_to,
    normalize_image,
    run_step,
)
from gobuild.builder_agent.repo_config import (
    BuildPlan,
    RepoConfigError,
    resolve_plan,
    source_folder,
)
from gobuild.builder_agent.reporter import BuildReporter
from gobuild.builder_agent.resource_sampler import ResourceSample, sampling
from gobuild.builder_agent.rollback_guard import promote_forward, superseded_reason
from gobuild.builder_agent.secret_mask import MIN_MASKED_LENGTH
from gobuild.builder_agent.source_checkout import SourceCheckout
from gobuild.platform.build_state import BuildState
from gobuild.platform.config import Settings
from gobuild.platform.records import Deployment, new_deployment_id
from gobuild.platform.repo_credentials import RepoCredentialCipher, SecretCipher, UnreadableSecret
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
        self.sources = SourceCheckout(settings, builder_id, docker_client, credentials, ca_trust)

    async def execute(self, run: BuildRun) -> Outcome:
        outcome = await self._outcome(run)
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

        await self.reporter.status(run, BuildState.RUNNING, step="checkout")
        target = request.commit_sha or request.branch or request.ref
        await logs.system(f"Cloning {redact_url(request.repo_url)} ({target})")
        # Every later contact with the repository goes through this one `remote`: the policy
        # checked it now, and its addresses are pinned.
        remote = await self.guard(run, self.sources.open_remote(run))
        run.commit_sha = await self.guard(run, self.sources.check_out(run, remote))
        await logs.system(f"Checked out commit {run.commit_sha}")
        await self._stop_if_superseded(run, remote)

        plan = await asyncio.to_thread(resolve_plan, run.workspace, request.config)
        if plan.timeout_seconds < run.timeout_seconds:
            run.deadline = run.started + plan.timeout_seconds
            run.timeout_seconds = plan.timeout_seconds
        await self._describe_plan(run, plan)

        image = plan.image
        caches: RunCaches | None = None
        if plan.steps:
            image, cache_image = await self._step_image(run, plan)
            if self.caches is not None:
                # Restored before the workspace is handed to the build user, who then owns it.
                caches = self.caches.for_run(run, plan.root_dir, cache_image, plan.cache_folders)
                await self.guard(run, caches.restore_dependencies())
                plan = replace(plan, env={**caches.env, **plan.env})
            await hand_workspace_to(run.workspace, settings.build_user)
        for step, command in plan.steps:
            if caches is not None and step != "install":
                await self.guard(run, caches.restore_build_folders())
            await self._run_step(run, plan, image, step, command)

        await self.reporter.status(run, BuildState.RUNNING, step="upload")
        # Checked again: the steps may have replaced the folder with a link out of the workspace.
        source = await asyncio.to_thread(source_folder, run.workspace, plan.root_dir)
        output_dir = await asyncio.to_thread(find_output, source, plan.output)
        shown = output_dir.relative_to(run.workspace.resolve()).as_posix()
        await logs.system(f"Packing output folder '{shown}'")
        packed = await self.guard(run, pack_output(output_dir, run.archive))
        for skipped in packed.skipped:
            await logs.system(f"Skipped {skipped}")
        artifact = await self.guard(run, self.storage.upload_artifact(run.build_id, packed))
        await logs.system(
            f"Uploaded artifact: {packed.files} files, {packed.size} bytes, sha256 {packed.sha256}"
        )

        await self.reporter.status(run, BuildState.RUNNING, step="deploy")
        deployment = await self._deploy(run, remote)
        if caches is not None:
            await self._save_caches(run, caches)
        return Outcome(
            BuildState.SUCCEEDED,
            artifact=artifact,
            deployment_id=deployment.id,
            deployment_url=deployment.url,
        )

    async def _step_image(self, run: BuildRun, plan: BuildPlan) -> tuple[str, str]:
        """The image the steps run in, and the name dependency caches are keyed by."""
        settings = self.settings
        if plan.dockerfile:
            if self.caches is None:
                raise RepoConfigError("this builder cannot build a `dockerfile` (no layer cache)")
            source = await asyncio.to_thread(source_folder, run.workspace, plan.root_dir)
            layer = await self.guard(
                run,
                self.caches.layers.image_for(run, source, plan.dockerfile, plan.memory_mb),
            )
            run.caches.append(layer.use)
            # Built here for this project: it runs by id, outside the image policy.
            return layer.image_id, layer.tag
        # The image policy: an untrusted image runs by the id of a fresh pull, never as a
        # local copy of that name (which may be another project's).
        image = await self.guard(
            run,
            ensure_image(
                self.docker,
                plan.image,
                pull_policy=settings.build_pull_policy,
                timeout=settings.build_pull_timeout_seconds,
                on_pull=run.logs.system,
                trusted=settings.trusted_build_images,
            ),
        )
        return image, normalize_image(plan.image)

    async def _save_caches(self, run: BuildRun, caches: RunCaches) -> None:
        """After the deployment: the time limit or a cancel cuts saving short, and the build
        stays succeeded."""
        try:
            await self.guard(run, caches.save())
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

    async def _decrypt_secrets(self, run: BuildRun, plan: BuildPlan) -> dict[str, str]:
        """The project's secret variables, decrypted right before a step and masked in the
        log from then on."""
        values: dict[str, str] = {}
        for name, token in sorted(plan.secret_env.items()):
            try:
                value = self.build_secrets.decrypt(token)
            except UnreadableSecret:
                raise BuildStopped(
                    BuildState.FAILED,
                    f"the secret variable {name} cannot be decrypted with this instance's "
                    "GOBUILD_SECRET_KEY; set it again",
                ) from None
            if not run.logs.secrets.add(value) and value:
                await run.logs.system(
                    f"The secret variable {name} is shorter than {MIN_MASKED_LENGTH} "
                    "characters: it is not masked in the log"
                )
            values[name] = value
        return values

    async def _stop_if_superseded(self, run: BuildRun, remote: GitRemote) -> None:
        """A pushed commit that is no longer its branch's head (a replayed or late delivery)
        is not built: it would deploy old code over newer."""
        time_left = max(1.0, run.deadline - asyncio.get_running_loop().time()) + 5
        reason = await self.guard(
            run,
            superseded_reason(
                run.request, remote, run.commit_sha, run.workspace, timeout=time_left
            ),
        )
        if reason:
            await run.logs.system(f"Not built: {reason}")
            raise BuildStopped(BuildState.CANCELLED, reason)

    async def _run_step(
        self, run: BuildRun, plan: BuildPlan, image: str, step: str, command: str
    ) -> None:
        request, settings = run.request, self.settings
        await self.reporter.status(run, BuildState.RUNNING, step=step)
        secrets = await self._decrypt_secrets(run, plan)
        await run.logs.system(f"$ {command}")
        env = {
            # The repository's own variables may point elsewhere (its own bundle).
            **self.ca_trust.env,
            **plan.env,
            **secrets,
            "HOME": "/tmp",
            "CI": "true",
            "GOBUILD": "1",
            "GOBUILD_BUILD_ID": run.build_id,
            "GOBUILD_COMMIT_SHA": run.commit_sha or "",
            "GOBUILD_BRANCH": request.branch or "",
        }
        spec = StepSpec(
            image=image,
            command=command,
            workspace=run.workspace,
            env=env,
            memory_mb=plan.memory_mb,
            cpus=plan.cpus,
            pids_limit=plan.pids_limit,
            user=settings.build_user,
            network=settings.build_network,
            labels={
                LABEL_BUILD_ID: run.build_id,
                LABEL_BUILDER_ID: self.builder_id,
                LABEL_STEP: step,
            },
            name_hint=step,
            read_only_mounts=self.ca_trust.mounts,
            workdir=plan.workdir,
        )

        async def report_sample(sample: ResourceSample) -> None:
            run.record_peak(sample)
            await self.reporter.resources(run, step, sample)

        async with sampling(report_sample) as sampler:
            result = await run_step(
                self.docker,
                spec,
                on_line=run.logs.write,
                deadline=run.deadline,
                cancel=run.cancel,
                on_started=sampler.watch,
            )
        if result.cancelled:
            raise BuildStopped(BuildState.CANCELLED, "cancelled")
        if result.timed_out:
            raise BuildStopped(BuildState.TIMED_OUT, f"timed out after {run.timeout_seconds} s")
        if result.oom_killed:
            raise BuildStopped(BuildState.FAILED, f"out of memory (limit {plan.memory_mb} MiB)")
        if result.exit_code != 0:
            raise BuildStopped(
                BuildState.FAILED, f"step '{step}' exited with code {result.exit_code}"
            )
        await run.logs.system(f"Step '{step}' finished in {result.duration_seconds:.1f}s")

    async def _deploy(self, run: BuildRun, remote: GitRemote) -> Deployment:
        request, settings = run.request, self.settings
        deployment_id = new_deployment_id(request.project_name)
        await self.guard(run, self.storage.deploy(deployment_id, run.build_id))
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
        for state in ("created", "ready"):
            await self.reporter.deployment(deployment, state)
        await run.logs.system(f"Deployed to {deployment.url}")
        if request.production and await promote_forward(
            self.deployments,
            deployment,
            remote=remote,
            history_dir=run.workspace.with_name(f"{run.workspace.name}.history"),
            deadline=run.deadline,
            say=run.logs.system,
        ):
            alias_url = settings.deployment_url(request.project_name)
            await self.reporter.deployment(deployment, "promoted", alias_url)
            await run.logs.system(f"Promoted to production: {alias_url}")
        return deployment

    async def guard(self, run: BuildRun, work: Coroutine[Any, Any, T]) -> T:
        """Run one stage under the build's deadline; stop it when the build is cancelled."""
        loop = asyncio.get_running_loop()
        task = asyncio.ensure_future(work)
        cancelled = asyncio.ensure_future(run.cancel.wait())
        try:
            done, _ = await asyncio.wait(
                {task, cancelled},
                timeout=max(0.0, run.deadline - loop.time()),
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            cancelled.cancel()
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        if task in done:
            return task.result()
        if run.cancel.is_set():
            raise BuildStopped(BuildState.CANCELLED, "cancelled")
        raise BuildStopped(BuildState.TIMED_OUT, f"timed out after {run.timeout_seconds} s")
