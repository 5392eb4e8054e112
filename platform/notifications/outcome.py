"""What one attempt at a delivery came to."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Outcome:
    """Delivered, or not: then whether another attempt may succeed (5xx, a timeout, a
    connection error) or would not (4xx, a refused address, a deleted receiver)."""

    delivered: bool
    retryable: bool = False
    response_code: int | None = None
    error: str | None = None


def delivered(response_code: int | None) -> Outcome:
    return Outcome(delivered=True, response_code=response_code)


def retry(error: str, response_code: int | None = None) -> Outcome:
    return Outcome(delivered=False, retryable=True, response_code=response_code, error=error)


def give_up(error: str, response_code: int | None = None) -> Outcome:
    return Outcome(delivered=False, retryable=False, response_code=response_code, error=error)
