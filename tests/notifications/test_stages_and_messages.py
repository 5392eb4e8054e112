"""Which events are which stage, what the messages say about them, and the findings event."""

from __future__ import annotations

from gobuild.platform.build_state import BuildState
from gobuild.platform.events import BuildErrorsFound, encode_event, parse_event
from gobuild.platform.notification_records import BuildSummary, Delivery
from gobuild.platform.notifications.messages import BuildLinks, hook_payload
from gobuild.platform.notifications.stages import commit_status_state, notification_stage
from gobuild.platform.records import Project
from tests.notifications.events import BuildEvents

PROJECT = Project(
    id="p_1",
    name="site",
    repo_url="https://github.com/octo/site.git",
    provider="github",
    webhook_secret="x" * 32,
)


def test_each_event_is_the_stage_receivers_subscribe_to() -> None:
    build = BuildEvents("p_1")
    assert notification_stage(build.status(BuildState.QUEUED)) is None
    assert notification_stage(build.status(BuildState.RUNNING, step="build")) == "started"
    # The end of a build is its completion (with the deployment URL and the error).
    assert notification_stage(build.status(BuildState.FAILED)) is None
    assert notification_stage(build.completed(BuildState.FAILED)) == "failed"
    assert notification_stage(build.completed(BuildState.TIMED_OUT)) == "failed"
    assert notification_stage(build.completed(BuildState.CANCELLED)) == "cancelled"
    assert notification_stage(build.completed(BuildState.SUCCEEDED)) == "succeeded"
    assert notification_stage(build.deployment("ready", "http://d.localhost/")) == "deployed"
    assert notification_stage(build.deployment("promoted", "http://d.localhost/")) == "promoted"
    assert notification_stage(build.deployment("pinned", "http://d.localhost/")) is None
    assert commit_status_state(build.status(BuildState.QUEUED)) == BuildState.QUEUED
    assert commit_status_state(build.status(BuildState.SUCCEEDED)) is None
    assert commit_status_state(build.completed(BuildState.SUCCEEDED)) == BuildState.SUCCEEDED
    assert commit_status_state(build.deployment("ready", "http://d.localhost/")) is None


def test_a_promotion_message_names_the_production_url_and_escapes_slack_controls() -> None:
    delivery = Delivery(
        id="n_1",
        project_id="p_1",
        kind="hook",
        receiver="h_1",
        stage="promoted",
        builds=[
            BuildSummary(
                build_id="b_1",
                state="promoted",
                number=7,
                branch="feature/<b>&co",
                deployment_url="http://site.localhost:8080/",
            )
        ],
    )
    payload = hook_payload(delivery, PROJECT, BuildLinks.for_urls("", "http://gw"), {})
    assert payload["text"].splitlines() == [
        "site: build #7 is live in production",
        "build #7 (feature/&lt;b&gt;&amp;co) is live in production: "
        "http://site.localhost:8080/ http://gw/api/builds/b_1",
    ]
    assert payload["builds"][0]["branch"] == "feature/<b>&co"  # the fields are raw


def test_the_error_findings_are_an_event_on_the_contract() -> None:
    event = BuildErrorsFound(
        build_id="b_1", project_id="p_1", step="build", lines=["npm ERR! missing script: build"]
    )
    assert parse_event(encode_event(event)) == event
    assert event.type == "build.errors" and event.key() == b"b_1"
