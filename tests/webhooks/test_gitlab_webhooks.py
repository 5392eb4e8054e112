"""GitLab deliveries: the token check and real push / tag push payloads normalized."""

from __future__ import annotations

import json

import pytest

from gobuild.webhooks import (
    MalformedPayload,
    UnsupportedEvent,
    WebhookEvent,
    parse_gitlab_delivery,
    verify_gitlab_token,
)
from tests.conftest import WEBHOOK_FIXTURES

GITLAB = WEBHOOK_FIXTURES / "gitlab"
ZEROS = "0" * 40


def fixture(name: str) -> bytes:
    return (GITLAB / name).read_bytes()


def edited(name: str, **changes: object) -> bytes:
    """A fixture with top-level fields replaced (`...` removes the field)."""
    payload = json.loads(fixture(name))
    for key, value in changes.items():
        if value is ...:
            payload.pop(key, None)
        else:
            payload[key] = value
    return json.dumps(payload).encode()


def test_matching_token_verifies() -> None:
    assert verify_gitlab_token("s3cret-token", "s3cret-token")


@pytest.mark.parametrize(
    ("secret", "header"),
    [
        pytest.param("s3cret-token", "s3cret-tokeN", id="different"),
        pytest.param("s3cret-token", None, id="missing-header"),
        pytest.param("s3cret-token", "", id="empty-header"),
        pytest.param("", "", id="empty-secret"),
        pytest.param("s3cret-token", "s3cret-tokén", id="non-ascii"),
    ],
)
def test_token_that_does_not_match_is_rejected(secret: str, header: str | None) -> None:
    assert not verify_gitlab_token(secret, header)


def test_push_hook_is_normalized() -> None:
    event = parse_gitlab_delivery("Push Hook", "uuid-1", fixture("push-hook.json"))

    assert event == WebhookEvent(
        provider="gitlab",
        kind="push",
        delivery_id="uuid-1",
        repo_urls=[
            "http://example.com/mike/diaspora.git",
            "git@example.com:mike/diaspora.git",
            "http://example.com/mike/diaspora",
            "mike/diaspora",
        ],
        repo_full_name="mike/diaspora",
        ref="refs/heads/master",
        branch="master",
        tag=None,
        commit_sha="da1560886d4f094c3e6c9ef40349f7d38b5d27d7",
        deleted=False,
        commit_message="fixed readme",
        author="John Smith",
    )
    assert event.is_branch


def test_tag_push_hook_is_normalized() -> None:
    event = parse_gitlab_delivery("Tag Push Hook", "uuid-2", fixture("tag-push-hook.json"))

    assert event == WebhookEvent(
        provider="gitlab",
        kind="push",
        delivery_id="uuid-2",
        repo_urls=[
            "http://example.com/jsmith/example.git",
            "git@example.com:jsmith/example.git",
            "http://example.com/jsmith/example",
            "jsmith/example",
            "ssh://git@example.com/jsmith/example.git",
        ],
        repo_full_name="jsmith/example",
        ref="refs/tags/v1.0.0",
        branch=None,
        tag="v1.0.0",
        commit_sha="82b3d5ae55f7080f1e6022629cdb57bfae7cccc7",
        deleted=False,
        # The tag push lists no commits, so there is no message to show.
        commit_message=None,
        author="John Smith",
    )
    assert event.is_tag


def test_branch_deletion_with_zero_after_and_null_checkout_sha_is_deleted() -> None:
    body = edited("push-hook.json", after=ZEROS, checkout_sha=None, commits=[])
    event = parse_gitlab_delivery("Push Hook", "uuid-3", body)

    assert event.deleted
    assert event.commit_sha is None
    assert event.commit_message is None
    assert event.branch == "master"


def test_tag_deletion_with_zero_checkout_sha_is_deleted() -> None:
    body = edited("tag-push-hook.json", after=ZEROS, checkout_sha=ZEROS)
    event = parse_gitlab_delivery("Tag Push Hook", "uuid-4", body)

    assert event.deleted
    assert event.commit_sha is None
    assert event.tag == "v1.0.0"


def test_merge_request_hook_is_unsupported() -> None:
    with pytest.raises(UnsupportedEvent) as caught:
        parse_gitlab_delivery("Merge Request Hook", "uuid-5", fixture("merge-request-hook.json"))
    assert caught.value.status == 400
    assert caught.value.message == (
        "GitLab event 'Merge Request Hook' is not supported;"
        " GoBuild builds from 'Push Hook' and 'Tag Push Hook'"
    )


def test_delivery_without_event_header_is_unsupported() -> None:
    with pytest.raises(UnsupportedEvent, match="X-Gitlab-Event"):
        parse_gitlab_delivery(None, "uuid-6", fixture("push-hook.json"))


def test_event_header_that_contradicts_the_payload_is_malformed() -> None:
    with pytest.raises(MalformedPayload, match="object_kind 'push'"):
        parse_gitlab_delivery("Tag Push Hook", "uuid-7", fixture("push-hook.json"))


def test_body_that_is_not_json_is_malformed() -> None:
    with pytest.raises(MalformedPayload, match="not valid JSON"):
        parse_gitlab_delivery("Push Hook", "uuid-8", b"\xff\xfe")


def test_push_without_ref_is_malformed_and_names_the_field() -> None:
    with pytest.raises(MalformedPayload) as caught:
        parse_gitlab_delivery("Push Hook", "uuid-9", edited("push-hook.json", ref=...))
    assert caught.value.message == "GitLab Push Hook payload is missing 'ref'"


def test_push_without_project_path_names_the_nested_field() -> None:
    body = edited("push-hook.json", project={"web_url": "http://example.com/mike/diaspora"})
    with pytest.raises(MalformedPayload) as caught:
        parse_gitlab_delivery("Push Hook", "uuid-10", body)
    assert caught.value.message == (
        "GitLab Push Hook payload is missing 'project.path_with_namespace'"
    )
