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


def test_the_record_steps_give_states_and_durations_over_the_log() -> None:
    tracker = StepTracker()
    # Only the tail of the log is read: the early lines are gone.
    for line in ("$ npm run build", "error: boom", "Build failed: step 'build' exited with code 1"):
        tracker.observe_line(line)
    tracker.observe_record(
        [
            {
                "name": "checkout",
                "state": "succeeded",
                "started_at": "2026-01-01T12:00:01Z",
                "duration_seconds": 2.0,
            },
            {
                "name": "install",
                "state": "succeeded",
                "started_at": "2026-01-01T12:00:03Z",
                "duration_seconds": 7.0,
            },
            {
                "name": "build",
                "state": "timed_out",
                "started_at": "2026-01-01T12:00:10Z",
                "duration_seconds": 15.0,
            },
        ]
    )

    assert states(tracker) == [
        ("checkout", "succeeded", 2.0),
        ("install", "succeeded", 7.0),
        ("build", "failed", 15.0),
        ("upload", "pending", None),
        ("deploy", "pending", None),
    ]
    assert tracker.failed_step == "build"
    assert tracker.steps[1].started_at == datetime(2026, 1, 1, 12, 0, 3, tzinfo=UTC)


def test_a_running_record_step_keeps_following_live_events() -> None:
    tracker = StepTracker()
    start = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
    tracker.observe_record(
        [
            {
                "name": "checkout",
                "state": "succeeded",
                "started_at": start.isoformat(),
                "duration_seconds": 1.0,
            },
            {
                "name": "install",
                "state": "running",
                "started_at": (start + timedelta(seconds=1)).isoformat(),
                "duration_seconds": None,
            },
        ]
    )
    tracker.observe_status("running", "build", start + timedelta(seconds=5))

    assert states(tracker)[:3] == [
        ("checkout", "succeeded", 1.0),
        ("install", "succeeded", 4.0),
        ("build", "running", None),
    ]


def test_records_without_steps_change_nothing() -> None:
    tracker = StepTracker()
    version = tracker.version
    tracker.observe_record(None)
    tracker.observe_record([])
    assert tracker.version == version
    assert [s.state for s in tracker.steps] == ["pending"] * 3
