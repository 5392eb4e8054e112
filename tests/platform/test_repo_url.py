"""Which repository URLs GoBuild clones, and how webhook payloads find their project."""

from __future__ import annotations

import pytest

from gobuild.platform.repo_url import InvalidRepoUrl, repo_keys, validate_repo_url


@pytest.mark.parametrize(
    "url", ["https://github.com/octo/app.git", "http://gitlab.local/g/app", "/srv/git/app.git"]
)
def test_http_and_local_paths_are_accepted(url: str) -> None:
    assert validate_repo_url(url) == url


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ftp://example.com/app.git", "'ftp://'"),
        ("ext::sh -c touch% /tmp/pwned", "'ext::'"),
        ("ssh://git@example.com/app.git", "'ssh://'"),
        ("file:///srv/app.git", "'file://'"),
        ("git@github.com:octo/app.git", "scheme none"),
        ("--upload-pack=evil", "starts with '-'"),
        ("/srv/../etc/app", "'..'"),
        ("", "empty"),
    ],
)
def test_other_schemes_are_refused_with_a_clear_message(url: str, message: str) -> None:
    with pytest.raises(InvalidRepoUrl, match=message):
        validate_repo_url(url)


def test_one_repository_gives_the_same_keys_whatever_url_form_names_it() -> None:
    expected = {"github.com/octo/app", "octo/app"}
    assert repo_keys("https://github.com/Octo/App.git") == expected
    assert repo_keys("git@github.com:octo/app.git") == expected
    assert "octo/app" in repo_keys("Octo/App")
    assert repo_keys("/srv/git/site.git") == {"srv/git/site"}
