"""Git refs and commit SHAs as webhook payloads carry them."""

from __future__ import annotations

from typing import Annotated

from pydantic import StringConstraints

# SHA-1 (40) or SHA-256 (64) object names; providers send them in lower case.
GitSha = Annotated[str, StringConstraints(pattern=r"^(?:[0-9a-f]{40}|[0-9a-f]{64})$")]
# A full ref name such as `refs/heads/main`; whitespace never occurs in a valid ref.
GitRef = Annotated[str, StringConstraints(pattern=r"^refs/\S+$")]

BRANCH_PREFIX = "refs/heads/"
TAG_PREFIX = "refs/tags/"


def is_zero_sha(sha: str | None) -> bool:
    """True for the all-zeros object name that stands for 'no commit' (a deleted ref)."""
    return sha is not None and set(sha) == {"0"}


def branch_and_tag(ref: str) -> tuple[str | None, str | None]:
    """`refs/heads/x` gives `("x", None)`, `refs/tags/v1` gives `(None, "v1")`, others neither."""
    if ref.startswith(BRANCH_PREFIX):
        return ref.removeprefix(BRANCH_PREFIX), None
    if ref.startswith(TAG_PREFIX):
        return None, ref.removeprefix(TAG_PREFIX)
    return None, None
