"""One build step: a command in a fresh, limited container (or exec'd in the build's kept
clone container, which has the same image and limits) with the build's environment, its
secrets decrypted just before it runs, and its CPU and memory sampled while it runs."""

from __future__ import annotations

import docker

from gobuild.builder_agent.build_run import BuildRun, BuildStopped
from gobuild.builder_agent.ca_trust import BuildCaTrust
from gobuild.builder_agent.container import (
    LABEL_BUILD_ID,
    LABEL_BUILDER_ID,
    LABEL_STEP,
    ExecSession,
    StepSpec,
    run_step,
    run_step_in,
)
from gobuild.builder_agent.repo_config import BuildPlan
from gobuild.builder_agent.reporter import BuildReporter
from gobuild.builder_agent.resource_sampler import ResourceSample, sampling
from gobuild.builder_agent.secret_mask import MIN_MASKED_LENGTH
from gobuild.platform.build_state import BuildState
from gobuild.platform.config import Settings
from gobuild.platform.repo_credentials import SecretCipher, UnreadableSecret


class StepRunner:
    """Runs the repository's steps of one build attempt."""

    def __init__(
        self,
        settings: Settings,
        builder_id: str,
        docker_client: docker.DockerClient,
        reporter: BuildReporter,
        build_secrets: SecretCipher,
        ca_trust: BuildCaTrust,
    ) -> None:
        self.settings = settings
        self.builder_id = builder_id
        self.docker = docker_client
        self.reporter = reporter
        self.build_secrets = build_secrets
        self.ca_trust = ca_trust

    async def run(
        self,
        run: BuildRun,
        plan: BuildPlan,
        image: str,
        step: str,
        command: str,
        *,
        session: ExecSession | None = None,
    ) -> None:
        """Run one step: in `session`'s container if given (see `run_step_in`), else in a
        container of its own."""
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
            if session is not None:
                result = await run_step_in(
                    session,
                    spec,
                    on_line=run.logs.write,
                    deadline=run.deadline,
                    cancel=run.cancel,
                    on_started=sampler.watch,
                )
            else:
                result = await run_step(
                    self.docker,
                    spec,
                    on_line=run.logs.write,
                    deadline=run.deadline,
                    cancel=run.cancel,
                    on_started=sampler.watch,
                    removals=run.removals,
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
