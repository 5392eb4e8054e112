"""The steps of a build, read from GoBuild's own log lines and the build's status events."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from gobuild.ui.build_steps import StepTracker

PLAN = "Image gobuild/build-base:bookworm; steps: install, build; output: dist; time limit 900 s"


def states(tracker: StepTracker) -> list[tuple[str, str, float | None]]:
    return [(s.name, s.state, s.seconds) for s in tracker.steps]


def test_a_failed_build_marks_the_step_that_failed() -> None:
    tracker = StepTracker()
    for line in (
        "Cloning /srv/site.git (main)",
        PLAN,
        "$ npm ci",
        "Step 'install' finished in 1.5s",
        "$ npm run build",
        "error: boom",
        "Build failed: step 'build' exited with code 1",
    ):
        tracker.observe_line(line)

    assert states(tracker) == [
        ("checkout", "succeeded", None),
        ("install", "succeeded", 1.5),
        ("build", "failed", None),
        ("upload", "pending", None),
        ("deploy", "pending", None),
    ]
    assert tracker.failed_step == "build"


def test_status_events_time_each_step() -> None:
    tracker = StepTracker()
    start = datetime(2026, 1, 1, tzinfo=UTC)
    tracker.observe_status("running", "checkout", start)
    tracker.observe_line(PLAN)
    tracker.observe_status("running", "install", start + timedelta(seconds=2))
    tracker.observe_status("running", "build", start + timedelta(seconds=5))
    tracker.observe_status("running", "upload", start + timedelta(seconds=9))
    tracker.observe_status("running", "deploy", start + timedelta(seconds=10))
    tracker.observe_status("succeeded", None, start + timedelta(seconds=12))

    assert states(tracker) == [
        ("checkout", "succeeded", 2.0),
        ("install", "succeeded", 3.0),
        ("build", "succeeded", 4.0),
        ("upload", "succeeded", 1.0),
        ("deploy", "succeeded", 2.0),
    ]


def test_a_repository_without_steps_goes_from_checkout_to_upload() -> None:
    tracker = StepTracker()
    for line in (
        "Cloning /srv/site.git (main)",
        "Image gobuild/build-base:bookworm; steps: none; output: dist or build; time limit 9 s",
        "Packing output folder '.'",
        "Deployed to http://site-x.localhost/",
        "Build succeeded in 2.0s",
    ):
        tracker.observe_line(line)

    assert [(s.name, s.state) for s in tracker.steps] == [
        ("checkout", "succeeded"),
        ("upload", "succeeded"),
        ("deploy", "succeeded"),
    ]
