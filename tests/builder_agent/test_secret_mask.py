"""Secret values masked as `***`: longest first, line by line for multi-line values, and
values too short to mask left alone."""

from __future__ import annotations

from gobuild.builder_agent.secret_mask import SecretMask


def test_every_occurrence_is_masked_and_a_longer_secret_is_masked_whole() -> None:
    mask = SecretMask()
    assert mask.add("abcd")
    assert mask.add("abcdefgh")

    assert mask.apply("x abcdefgh y abcd z abcdabcd") == "x *** y *** z ******"


def test_too_short_values_are_not_masked_and_nothing_is_masked_without_secrets() -> None:
    mask = SecretMask()
    assert mask.apply("plain text") == "plain text"
    assert not mask.add("abc")
    assert mask.apply("abc abc") == "abc abc"


def test_a_multi_line_secret_is_masked_line_by_line() -> None:
    mask = SecretMask()
    mask.add("first-line\r\nsecond-line\n")

    assert mask.apply("first-line") == "***"
    assert mask.apply("  second-line") == "  ***"
