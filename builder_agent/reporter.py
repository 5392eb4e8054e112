"""Telling the rest of GoBuild what happens to a build: status changes, the completion and the
deployment's states, each an event on its topic keyed by build id.

The status changes and the completion travel on two topics, so a consumer of both may receive
the completion before the last progress events: each of them is numbered (`seq`, per attempt;
the completion and the terminal status share the last number) and the build store orders them.

Progress (the running state, steps, resource samples, deployment states) is best effort: a
broker that is down does not fail the build, and the build does not wait for the broker to
take it. A build's progress events are queued for the broker in the order told, and the build
goes on while they travel (`flush` waits for them). The result is not best effort: `result`
builds it for the outbox (`ResultDelivery`), and `publish_result` raises when the broker does
not take it."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiokafka.errors import KafkaError

from gobuild.builder_agent.build_run import BuildRun, Outcome
from gobuild.builder_agent.resource_sampler import ResourceSample
from gobuild.platform.build_state import BuildState
from gobuild.platform.bus import EventProducer
from gobuild.platform.events import (
    TOPIC_BUILD_COMPLETIONS,
    TOPIC_BUILD_STATUS,
    TOPIC_DEPLOYMENT_STATUS,
    BuildCompleted,
    BuildResourceSample,
    BuildStatusChanged,
    DeploymentState,
    DeploymentStatusChanged,
    Event,
)
from gobuild.platform.records import Deployment
from gobuild.platform.stores.outbox import PendingResult

log = logging.getLogger(__name__)


def with_cancel_reason(result: PendingResult, reason: str) -> PendingResult:
    """A cancelled build's result saying why it was cancelled: the reason the canceller gave
    (a newer push superseded the build) instead of the builder's generic one."""
    return result.model_copy(
        update={
            "completion": result.completion.model_copy(update={"error": reason}),
            "status": result.status.model_copy(update={"reason": reason}),
        }
    )


class BuildReporter:
    """Publishes one builder's events about the builds it runs."""

    def __init__(self, producer: EventProducer, builder_id: str) -> None:
        self.producer = producer
        self.builder_id = builder_id
        # build id -> its progress events on their way to the broker
        self._sending: dict[str, set[asyncio.Future[Any]]] = {}

    async def status(
        self,
        run: BuildRun,
        state: BuildState,
        *,
        step: str | None = None,
        reason: str | None = None,
    ) -> None:
        """The build runs (now at `step`); best effort."""
        if step is not None:
            run.step = step
        event = self._status_event(run, state, run.next_event_seq(), step=step, reason=reason)
        await self._send_soon(run.build_id, TOPIC_BUILD_STATUS, event)

    async def flush(self, build_id: str, timeout: float = 10.0) -> None:
        """Until the broker took the build's progress events told so far (or failed to), at
        most `timeout` seconds: its result goes after them."""
        sending = self._sending.pop(build_id, set())
        if sending:
            await asyncio.wait(set(sending), timeout=timeout)

    async def _send_soon(self, build_id: str, topic: str, event: Event) -> None:
        """Queue `event` for the broker behind the build's earlier ones; a failure is logged."""
        try:
            sent = await self.producer.send_soon(topic, event)
        except (KafkaError, TimeoutError, OSError) as exc:
            log.warning("build %s: %s event not published (%r)", build_id, event.type, exc)
            return
        sending = self._sending.setdefault(build_id, set())
        sending.add(sent)

        def done(future: asyncio.Future[Any]) -> None:
            sending.discard(future)
            if not sending and self._sending.get(build_id) is sending:
                del self._sending[build_id]
            if not future.cancelled() and future.exception() is not None:
                log.warning(
                    "build %s: %s event not published (%r)",
                    build_id,
                    event.type,
                    future.exception(),
                )

        sent.add_done_callback(done)

    def result(self, run: BuildRun, outcome: Outcome, duration: float) -> PendingResult:
        """The build's completion and terminal status, as the outbox keeps them."""
        # A build that did not succeed ends at the step it was in ("failed at test").
        step = None if outcome.state == BuildState.SUCCEEDED else run.step
        seq = run.next_event_seq()
        completion = BuildCompleted(
            build_id=run.build_id,
            project_id=run.request.project_id,
            state=outcome.state,
            duration_seconds=round(duration, 3),
            commit_sha=run.commit_sha,
            artifact=outcome.artifact,
            deployment_id=outcome.deployment_id,
            deployment_url=outcome.deployment_url,
            error=outcome.reason,
            builder_id=self.builder_id,
            peak_cpu_percent=run.peak_cpu_percent,
            peak_memory_bytes=run.peak_memory_bytes,
            caches=list(run.caches),
            step=step,
            attempt=run.attempt,
            seq=seq,
        )
        status = self._status_event(run, outcome.state, seq, step=step, reason=outcome.reason)
        return PendingResult(completion=completion, status=status)

    async def publish_result(self, result: PendingResult) -> None:
        """The completion and the terminal status, sent together (they share their `seq`);
        raises when the broker does not take them."""
        await asyncio.gather(
            self.producer.publish(TOPIC_BUILD_COMPLETIONS, result.completion),
            self.producer.publish(TOPIC_BUILD_STATUS, result.status),
        )

    def _status_event(
        self,
        run: BuildRun,
        state: BuildState,
        seq: int,
        *,
        step: str | None = None,
        reason: str | None = None,
    ) -> BuildStatusChanged:
        return BuildStatusChanged(
            build_id=run.build_id,
            project_id=run.request.project_id,
            state=state,
            number=run.request.number,
            step=step,
            reason=reason,
            builder_id=self.builder_id,
            commit_sha=run.commit_sha,
            attempt=run.attempt,
            seq=seq,
        )

    async def _publish_progress(self, topic: str, event: Event) -> None:
        try:
            await self.producer.publish(topic, event)
        except (KafkaError, TimeoutError, OSError) as exc:
            build_id = getattr(event, "build_id", "?")
            log.warning("build %s: %s event not published (%r)", build_id, event.type, exc)

    async def resources(self, run: BuildRun, step: str, sample: ResourceSample) -> None:
        await self._publish_progress(
            TOPIC_BUILD_STATUS,
            BuildResourceSample(
                build_id=run.build_id,
                project_id=run.request.project_id,
                step=step,
                cpu_percent=sample.cpu_percent,
                memory_bytes=sample.memory_bytes,
                memory_limit_bytes=sample.memory_limit_bytes,
            ),
        )

    async def deployment(
        self, deployment: Deployment, state: DeploymentState, alias_url: str | None = None
    ) -> None:
        """The deployment's state, after the build's progress events told before."""
        await self._send_soon(
            deployment.build_id,
            TOPIC_DEPLOYMENT_STATUS,
            DeploymentStatusChanged(
                deployment_id=deployment.id,
                build_id=deployment.build_id,
                project_id=deployment.project_id,
                state=state,
                url=deployment.url,
                alias_url=alias_url,
            ),
        )
