"""GitHub deliveries: signatures, form-encoded bodies, and real payloads normalized."""

from __future__ import annotations

import hashlib
import hmac
import json
from urllib.parse import urlencode

import pytest

from gobuild.webhooks import (
    InvalidSignature,
    MalformedPayload,
    UnsupportedEvent,
    WebhookError,
    WebhookEvent,
    github_body_json,
    parse_github_delivery,
    verify_github_signature,
)
from tests.conftest import WEBHOOK_FIXTURES

GITHUB = WEBHOOK_FIXTURES / "github"

# GitHub's documented example ("Validating webhook deliveries").
DOC_SECRET = "It's a Secret to Everybody"
DOC_BODY = b"Hello, World!"
DOC_SIGNATURE = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"

SHA = "6113728f27ae82c7b1a177c8d03f9e96e0adf246"
HELLO_WORLD_URLS = [
    "https://github.com/Codertocat/Hello-World.git",
    "git@github.com:Codertocat/Hello-World.git",
    "https://github.com/Codertocat/Hello-World",
    "Codertocat/Hello-World",
]


def fixture(name: str) -> bytes:
    return (GITHUB / name).read_bytes()


def edited(name: str, **changes: object) -> bytes:
    """A fixture with top-level fields replaced (None removes the field)."""
    payload = json.loads(fixture(name))
    for key, value in changes.items():
        if value is None:
            payload.pop(key, None)
        else:
            payload[key] = value
    return json.dumps(payload).encode()


def sign(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


# --- signatures ---------------------------------------------------------------------------


def test_githubs_published_signature_example_verifies() -> None:
    assert verify_github_signature(DOC_SECRET, DOC_BODY, DOC_SIGNATURE)
    assert verify_github_signature(DOC_SECRET.encode(), DOC_BODY, DOC_SIGNATURE)


def test_signature_with_upper_case_hex_still_verifies() -> None:
    upper = "sha256=" + DOC_SIGNATURE.removeprefix("sha256=").upper()
    assert verify_github_signature(DOC_SECRET, DOC_BODY, upper)


@pytest.mark.parametrize(
    ("secret", "body", "header"),
    [
        pytest.param(DOC_SECRET, b"Hello, World?", DOC_SIGNATURE, id="tampered-body"),
        pytest.param("It's a secret to everybody", DOC_BODY, DOC_SIGNATURE, id="wrong-secret"),
        pytest.param(DOC_SECRET, DOC_BODY, None, id="missing-header"),
        pytest.param(DOC_SECRET, DOC_BODY, "", id="empty-header"),
        pytest.param(
            DOC_SECRET, DOC_BODY, DOC_SIGNATURE.replace("sha256=", "sha1="), id="wrong-prefix"
        ),
        pytest.param(DOC_SECRET, DOC_BODY, DOC_SIGNATURE.removeprefix("sha256="), id="no-prefix"),
        pytest.param(DOC_SECRET, DOC_BODY, DOC_SIGNATURE[:-2], id="truncated"),
        pytest.param(DOC_SECRET, DOC_BODY, DOC_SIGNATURE[:-1] + "ü", id="non-ascii"),
        pytest.param("", DOC_BODY, sign("", DOC_BODY), id="empty-secret"),
    ],
)
def test_signature_that_does_not_match_is_rejected(
    secret: str, body: bytes, header: str | None
) -> None:
    assert not verify_github_signature(secret, body, header)


# --- form-encoded deliveries --------------------------------------------------------------


def test_signed_form_encoded_push_verifies_over_raw_body_and_parses() -> None:
    body = urlencode({"payload": fixture("push-branch-created.json").decode()}).encode()
    secret = "project-secret"
    content_type = "application/x-www-form-urlencoded; charset=utf-8"

    assert verify_github_signature(secret, body, sign(secret, body))
    event = parse_github_delivery("push", "d-1", github_body_json(body, content_type))

    assert event.branch == "master"
    assert event.commit_sha == SHA


def test_json_body_is_returned_unchanged() -> None:
    body = fixture("ping.json")
    assert github_body_json(body, "application/json") is body
    assert github_body_json(body, None) is body


def test_form_encoded_body_without_payload_field_is_malformed() -> None:
    with pytest.raises(MalformedPayload, match="'payload'"):
        github_body_json(b"other=1", "application/x-www-form-urlencoded")


# --- real payloads ------------------------------------------------------------------------


def test_push_creating_a_branch_is_normalized() -> None:
    event = parse_github_delivery("push", "72d3162e-cc78", fixture("push-branch-created.json"))

    assert event == WebhookEvent(
        provider="github",
        kind="push",
        delivery_id="72d3162e-cc78",
        repo_urls=HELLO_WORLD_URLS,
        repo_full_name="Codertocat/Hello-World",
        ref="refs/heads/master",
        branch="master",
        tag=None,
        commit_sha=SHA,
        deleted=False,
        commit_message="Initial commit",
        author="Codertocat",
    )
    assert event.is_branch
    assert not event.is_tag


def test_tag_push_on_github_enterprise_is_normalized() -> None:
    event = parse_github_delivery("push", None, fixture("push-tag-created-ghes.json"))

    assert event == WebhookEvent(
        provider="github",
        kind="push",
        delivery_id=None,
        repo_urls=[
            "https://octocoders.github.io/Codertocat/Hello-World.git",
            "git@octocoders.github.io:Codertocat/Hello-World.git",
            "https://octocoders.github.io/Codertocat/Hello-World",
            "Codertocat/Hello-World",
        ],
        repo_full_name="Codertocat/Hello-World",
        ref="refs/tags/simple-tag",
        branch=None,
        tag="simple-tag",
        commit_sha=SHA,
        deleted=False,
        commit_message="Adding a .gitignore file",
        author="Codertocat",
    )
    assert event.is_tag
    assert not event.is_branch


def test_tag_deletion_is_marked_deleted_without_a_commit() -> None:
    event = parse_github_delivery("push", "d-2", fixture("push-tag-deleted.json"))

    assert event.deleted
    assert event.commit_sha is None
    assert event.commit_message is None
    assert event.tag == "simple-tag"
    assert event.ref == "refs/tags/simple-tag"
    assert event.repo_urls == HELLO_WORLD_URLS
    assert event.author == "Codertocat"


def test_push_with_all_zero_after_counts_as_deleted_even_without_the_deleted_flag() -> None:
    body = edited("push-tag-deleted.json", deleted=None, ref="refs/heads/feature/x")
    event = parse_github_delivery("push", "d-3", body)

    assert event.deleted
    assert event.commit_sha is None
    assert event.branch == "feature/x"


def test_ping_takes_the_repository_from_the_payload() -> None:
    event = parse_github_delivery("ping", "d-4", fixture("ping.json"))

    assert event == WebhookEvent(
        provider="github",
        kind="ping",
        delivery_id="d-4",
        repo_urls=[
            "https://github.com/Octocoders/Hello-World.git",
            "git@github.com:Octocoders/Hello-World.git",
            "https://github.com/Octocoders/Hello-World",
            "Octocoders/Hello-World",
        ],
        repo_full_name="Octocoders/Hello-World",
    )


def test_ping_without_repository_takes_the_repository_from_the_hook_url() -> None:
    event = parse_github_delivery("ping", "d-5", edited("ping.json", repository=None))

    assert event.kind == "ping"
    assert event.repo_full_name == "Octocoders/Hello-World"
    assert event.repo_urls == ["Octocoders/Hello-World"]


def test_ping_from_an_organization_hook_names_no_repository() -> None:
    org_hook = {"type": "Organization", "url": "https://api.github.com/orgs/octo/hooks/1"}
    event = parse_github_delivery(
        "ping", "d-6", edited("ping.json", repository=None, hook=org_hook)
    )

    assert event.repo_full_name is None
    assert event.repo_urls == []


# --- refused deliveries -------------------------------------------------------------------


@pytest.mark.parametrize("name", ["pull_request-opened.json", "pull_request-synchronize.json"])
def test_pull_request_event_is_unsupported(name: str) -> None:
    with pytest.raises(UnsupportedEvent, match="'pull_request'") as caught:
        parse_github_delivery("pull_request", "d-7", fixture(name))
    assert caught.value.status == 400


def test_delivery_without_event_header_is_unsupported() -> None:
    with pytest.raises(UnsupportedEvent, match="X-GitHub-Event"):
        parse_github_delivery(None, "d-8", fixture("push-branch-created.json"))


def test_body_that_is_not_json_is_malformed() -> None:
    with pytest.raises(MalformedPayload, match="not valid JSON") as caught:
        parse_github_delivery("push", "d-9", b"{not json")
    assert caught.value.status == 400
    assert caught.value.code == "malformed_payload"


def test_push_without_ref_is_malformed_and_names_the_field() -> None:
    with pytest.raises(MalformedPayload) as caught:
        parse_github_delivery("push", "d-10", edited("push-branch-created.json", ref=None))
    assert caught.value.message == "GitHub push payload is missing 'ref'"


def test_push_without_repository_full_name_names_the_nested_field() -> None:
    body = edited("push-branch-created.json", repository={"clone_url": "https://x/y.git"})
    with pytest.raises(MalformedPayload) as caught:
        parse_github_delivery("push", "d-11", body)
    assert caught.value.message == "GitHub push payload is missing 'repository.full_name'"


def test_push_with_a_sha_that_is_not_hex_is_malformed() -> None:
    body = edited("push-branch-created.json", after="--upload-pack=evil")
    with pytest.raises(MalformedPayload, match="invalid 'after'"):
        parse_github_delivery("push", "d-12", body)


def test_push_with_a_json_array_body_is_malformed() -> None:
    with pytest.raises(MalformedPayload):
        parse_github_delivery("push", "d-13", b"[]")


def test_error_classes_carry_http_status_and_are_value_errors() -> None:
    assert InvalidSignature("bad").status == 401
    assert UnsupportedEvent("x").status == 400
    assert MalformedPayload("x").status == 400
    assert issubclass(InvalidSignature, WebhookError)
    assert issubclass(WebhookError, ValueError)
    assert InvalidSignature("signature mismatch").message == "signature mismatch"


def test_webhook_event_is_frozen() -> None:
    event = parse_github_delivery("push", "d-14", fixture("push-branch-created.json"))
    with pytest.raises(ValueError, match="frozen"):
        event.branch = "other"  # type: ignore[misc]
