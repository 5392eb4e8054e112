"""The storage contract's path builders: a request path becomes a path under one deployment's
files or is refused; ids never become more than one path segment."""

from __future__ import annotations

import httpx
import pytest

from gobuild.platform.config import Settings
from gobuild.platform.storage_client import (
    INTERNAL_TOKEN_HEADER,
    InvalidFilePath,
    MissingInternalToken,
    artifact_path,
    deployment_file_path,
    deployment_path,
    internal_headers,
    log_path,
    quote_file_path,
    require_internal_token,
)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("/", ""),
        ("", ""),
        ("/index.html", "index.html"),
        ("/about/", "about/"),
        ("/assets/app.js", "assets/app.js"),
        ("/caf%C3%A9/men%C3%BC.html", "caf%C3%A9/men%C3%BC.html"),
        ("/a%20b.txt", "a%20b.txt"),
        ("/..foo/bar..", "..foo/bar.."),
        ("/.well-known/x", ".well-known/x"),
        # Decoded once: a doubly encoded dot is a file literally named `%2e%2e`.
        ("/%252e%252e/logs", "%252e%252e/logs"),
    ],
)
def test_ordinary_paths_are_decoded_once_and_quoted_again(raw: str, expected: str) -> None:
    assert quote_file_path(raw) == expected


@pytest.mark.parametrize(
    "raw",
    [
        "/../logs/b_1",
        "/../../../logs/b_1",
        "/a/../../artifacts/b_1",
        "/./index.html",
        "/about/.",
        "/about/..",
        "/%2e%2e/%2e%2e/logs/b_1",
        "/%2E%2E/%2E%2E/artifacts/b_1",
        "/.%2e/logs/b_1",
        "/%2e/index.html",
        "/a%2f..%2f..%2flogs",
        "/a%2F%2E%2E%2Fb",
        "/..%5c..%5clogs",
        "/a\\b",
        "/a%5Cb",
        "/a%00.html",
        "/a%0a",
        "/a%7f",
        "//logs/b_1",
        "/a//b",
        "/%ff%fe",
        "/caf\u00e9",
    ],
)
def test_paths_that_could_leave_the_deployment_are_refused(raw: str) -> None:
    with pytest.raises(InvalidFilePath):
        quote_file_path(raw)


def test_a_deployment_file_path_stays_under_that_deployments_files_after_url_normalization() -> (
    None
):
    path = deployment_file_path("site-abc", "/docs/%C3%A9t%C3%A9/")
    assert path == "/deployments/site-abc/files/docs/%C3%A9t%C3%A9/"
    url = httpx.URL("http://storage:8082" + path)
    assert url.raw_path.decode() == path  # nothing for httpx to normalize away


def test_ids_become_exactly_one_segment() -> None:
    assert artifact_path("b_1") == "/artifacts/b_1"
    assert log_path("b_1") == "/logs/b_1"
    assert deployment_path("site-1") == "/deployments/site-1"
    assert log_path("a/../b") == "/logs/a%2F..%2Fb"
    for bad in ("", ".", ".."):
        with pytest.raises(ValueError):
            artifact_path(bad)


def test_the_internal_token_is_required_and_sent_in_one_header() -> None:
    settings = Settings(_env_file=None, internal_token="")  # type: ignore[call-arg]
    with pytest.raises(MissingInternalToken, match="the gateway cannot start"):
        require_internal_token(settings, "the gateway")
    settings = Settings(_env_file=None, internal_token="t0ken")  # type: ignore[call-arg]
    assert require_internal_token(settings, "storage") == "t0ken"
    assert internal_headers("t0ken") == {INTERNAL_TOKEN_HEADER: "t0ken"}
