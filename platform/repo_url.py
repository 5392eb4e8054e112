"""Repository URLs: which ones GoBuild accepts, and the keys a webhook payload is matched by."""

from __future__ import annotations

import re
from pathlib import PurePosixPath
from urllib.parse import urlsplit

ALLOWED_SCHEMES = ("https", "http")
# Git's own allow-list for every clone GoBuild runs: `ext::`, `ssh://`, `ftp://` never run.
GIT_ALLOWED_PROTOCOLS = "http:https:file"


class InvalidRepoUrl(ValueError):
    """A repository URL GoBuild will not clone."""


def validate_repo_url(url: str) -> str:
    """Return the URL if it is an http(s) URL or an absolute local path; raise otherwise."""
    url = url.strip()
    if not url:
        raise InvalidRepoUrl("repository URL is empty")
    if "::" in url.split("/", 1)[0]:
        helper = url.split("::", 1)[0]
        raise InvalidRepoUrl(f"unsupported repository URL scheme '{helper}::' (git remote helper)")
    if any(ch in url for ch in "\x00\n\r\t ") or url.startswith("-"):
        raise InvalidRepoUrl("repository URL contains whitespace or starts with '-'")
    if url.startswith("/"):
        if ".." in PurePosixPath(url).parts:
            raise InvalidRepoUrl("a local repository path may not contain '..'")
        return url
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme not in ALLOWED_SCHEMES:
        shown = f"'{scheme}://'" if scheme else "none"
        raise InvalidRepoUrl(
            f"unsupported repository URL scheme {shown}: use https://, http:// or an absolute path"
        )
    parts = urlsplit(url)
    if not parts.hostname:
        raise InvalidRepoUrl("repository URL has no host")
    return url


def repo_keys(url: str) -> set[str]:
    """Keys under which a repository URL is indexed: `host/owner/name` and `owner/name`.

    `https://github.com/Octo/App.git`, `git@github.com:octo/app` and `github.com/octo/app`
    give `github.com/octo/app` (and `octo/app`); a local path gives its path.
    """
    url = url.strip()
    if not url:
        return set()
    host = ""
    if "://" in url:
        parts = urlsplit(url)
        host, path = (parts.hostname or "").lower(), parts.path
    elif re.match(r"^[\w.-]+@[\w.-]+:", url):  # scp-like: git@host:owner/name.git
        userhost, path = url.split(":", 1)
        host = userhost.split("@", 1)[1].lower()
    else:
        path = url
    path = path.strip("/").removesuffix(".git").lower()
    if not path:
        return set()
    keys = {f"{host}/{path}" if host else path}
    if host and path.count("/") >= 1:
        keys.add(path)
    return keys
