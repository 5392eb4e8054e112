"""A build's secret values, masked as `***` in whatever text leaves the builder for people: its
log lines (`LogStreamer`) and its failure reason.

Lines are masked whole (the container's output is split into complete lines first, so a
secret written in pieces is whole again here). A multi-line secret is masked line by line as
well, since a log line holds at most one of its lines. Values shorter than
`MIN_MASKED_LENGTH` are not masked: they would blank out ordinary words and numbers.
"""

from __future__ import annotations

import re

MASK = "***"
MIN_MASKED_LENGTH = 4


class SecretMask:
    """The secret values of one build, and the replacing of them in text."""

    def __init__(self) -> None:
        self._values: set[str] = set()
        self._pattern: re.Pattern[str] | None = None

    def add(self, value: str) -> bool:
        """Mask `value` from now on; False if it is too short to be masked."""
        forms = {value, *(line.strip("\r") for line in value.split("\n"))}
        forms = {form for form in forms if len(form) >= MIN_MASKED_LENGTH}
        if not forms - self._values:
            return bool(forms)
        self._values |= forms
        # Longest first, so no part of a longer secret is left after a shorter one matched.
        alternatives = sorted(self._values, key=len, reverse=True)
        self._pattern = re.compile("|".join(re.escape(form) for form in alternatives))
        return True

    def apply(self, text: str) -> str:
        """`text` with every secret value replaced by `***`."""
        if self._pattern is None:
            return text
        return self._pattern.sub(MASK, text)
