"""What the dashboard writes about a queued build, and how the scheduling form reads its
fields."""

from __future__ import annotations

from gobuild.ui.pages.build_view import queue_text
from gobuild.ui.pages.project_scheduling import dependency_options, parse_labels, whole_number


def test_a_queued_build_says_its_place_why_it_waits_and_when_it_should_start() -> None:
    queue = {
        "position": 3,
        "reason": "no_free_slot",
        "reason_text": "every builder slot is busy",
        "estimated_start": "2026-11-27T12:03:00Z",
    }
    assert queue_text(queue) == (
        "Queued — position 3: every builder slot is busy (estimated start 2026-11-27 12:03:00 UTC)"
    )
    assert queue_text({**queue, "estimated_start": None}) == (
        "Queued — position 3: every builder slot is busy"
    )


def test_the_scheduling_form_reads_labels_numbers_and_dependencies() -> None:
    assert parse_labels(" arch=amd64, node ,, ") == ["arch=amd64", "node"]
    assert (whole_number(None), whole_number(4.0)) == (None, 4)
    project = {
        "id": "p_web",
        "dependencies": [{"id": "p_api", "name": "api"}, {"id": "p_hidden", "name": None}],
    }
    readable = [{"id": "p_web", "name": "web"}, {"id": "p_api", "name": "api"}]
    assert dependency_options(project, readable) == {"p_api": "api", "p_hidden": "p_hidden"}
