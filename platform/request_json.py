"""Strict parsing of JSON request bodies: UTF-8 only, nested at most `MAX_JSON_DEPTH` levels,
no lone surrogates. Anything else is a 400 that says what is wrong, never a 500.

The standard parser recurses per nesting level, so a body like `[[[[...` thousands deep
raises RecursionError, and invalid UTF-8 fails while decoding, before parsing starts. Both
become `InvalidJson` here. `StrictJsonRequest` makes `request.get_json()` (and so every
quart-schema `validate_request`) use this parser and answer `ApiError(400)`.
"""

from __future__ import annotations

import json
from typing import Any

from quart import Request

from gobuild.platform.api_errors import ApiError

INVALID_JSON = "request body is not valid JSON"
# No GoBuild request comes near this; it keeps validation and storage far from recursion limits.
MAX_JSON_DEPTH = 32


class InvalidJson(ValueError):
    """A body that is not acceptable JSON; the message says why and is safe to show."""


def parse_json_body(raw: bytes) -> Any:
    """The JSON value in `raw`; raises InvalidJson naming the problem."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidJson(
            f"the body is not valid UTF-8: byte 0x{raw[exc.start]:02x} at offset {exc.start}"
        ) from None
    try:
        value = json.loads(text)
    except RecursionError:
        raise InvalidJson(_too_deep()) from None
    except ValueError as exc:
        raise InvalidJson(str(exc)) from None
    _check_structure(value)
    return value


def _too_deep() -> str:
    return f"the body is nested more than {MAX_JSON_DEPTH} levels deep"


def _check_structure(value: Any) -> None:
    """Refuse nesting deeper than MAX_JSON_DEPTH and strings that are not valid Unicode
    (a `\\ud800` escape decodes to a lone surrogate that cannot be stored or sent on)."""
    pending: list[tuple[Any, int]] = [(value, 0)]
    while pending:
        item, depth = pending.pop()
        if isinstance(item, str):
            _check_text(item)
            continue
        if not isinstance(item, dict | list):
            continue
        if depth >= MAX_JSON_DEPTH:
            raise InvalidJson(_too_deep())
        if isinstance(item, dict):
            for key, member in item.items():
                _check_text(key)
                pending.append((member, depth + 1))
        else:
            pending.extend((member, depth + 1) for member in item)


def _check_text(text: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidJson(
            f"the body contains \\u{ord(text[exc.start]):04x}, a lone surrogate, "
            "which is not valid Unicode"
        ) from None


class StrictJsonRequest(Request):
    """A Quart request whose `get_json` parses with `parse_json_body`."""

    async def get_json(self, force: bool = False, silent: bool = False, cache: bool = True) -> Any:
        if cache and self._cached_json[silent] is not Ellipsis:
            return self._cached_json[silent]
        if not (force or self.is_json):
            return None
        raw = await self.get_data(cache=cache, as_text=False)
        try:
            result = parse_json_body(raw)
        except InvalidJson as exc:
            if not silent:
                raise ApiError(400, INVALID_JSON, str(exc)) from None
            result = None
        if cache:
            self._cached_json[silent] = result
        return result
