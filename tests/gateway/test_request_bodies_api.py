"""Bodies that are not acceptable JSON (bad UTF-8, absurd nesting, lone surrogates) are a 400
that says what is wrong, on every JSON route, signed in or not; never a 500."""

from __future__ import annotations

import pytest

from gobuild.platform.request_json import MAX_JSON_DEPTH
from tests.gateway.support import AUTH, Gateway

JSON = {"Content-Type": "application/json"}
INVALID_UTF8 = b'{"username": "admin\xff\xfe", "password": "x"}'
DEEPLY_NESTED = b"[" * 30_000 + b"]" * 30_000  # within the 64 KiB body limit
SLIGHTLY_TOO_DEEP = b'{"name": ' + b"[" * MAX_JSON_DEPTH + b"]" * MAX_JSON_DEPTH + b"}"
LONE_SURROGATE = b'{"name": "site\\ud800", "repo_url": "https://github.com/a/b.git"}'

# (path, whether the admin key is sent): public sign-in routes and signed-in routes.
ROUTES = [
    ("/api/auth/login", False),
    ("/api/auth/refresh", False),
    ("/api/auth/exchange", False),
    ("/api/auth/logout", True),
    ("/api/projects", True),
    ("/api/users", True),
    ("/api/keys", True),
]


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (INVALID_UTF8, "not valid UTF-8: byte 0xff at offset 19"),
        (DEEPLY_NESTED, f"nested more than {MAX_JSON_DEPTH} levels deep"),
        (SLIGHTLY_TOO_DEEP, f"nested more than {MAX_JSON_DEPTH} levels deep"),
        (LONE_SURROGATE, "\\ud800, a lone surrogate"),
    ],
    ids=["invalid-utf8", "nested-30000", "nested-33", "lone-surrogate"],
)
async def test_unacceptable_json_body_is_400_saying_what_is_wrong_on_every_json_route(
    gateway: Gateway, body: bytes, problem: str
) -> None:
    for path, signed_in in ROUTES:
        headers = {**JSON, **(AUTH if signed_in else {})}
        response = await gateway.client.post(path, data=body, headers=headers)
        assert response.status_code == 400, (path, await response.get_data(as_text=True))
        answer = await response.get_json()
        assert answer["error"] == "request body is not valid JSON", path
        assert problem in answer["detail"], (path, answer)


async def test_malformed_json_names_the_position(gateway: Gateway) -> None:
    response = await gateway.client.post(
        "/api/auth/login", data=b'{"username": "admin",', headers=JSON
    )
    assert response.status_code == 400
    answer = await response.get_json()
    assert answer["error"] == "request body is not valid JSON"
    assert "line 1 column 22" in answer["detail"]


async def test_nesting_within_the_limit_still_reaches_validation(gateway: Gateway) -> None:
    nested = b'{"name": ' + b"[" * (MAX_JSON_DEPTH - 1) + b"]" * (MAX_JSON_DEPTH - 1) + b"}"
    response = await gateway.client.post("/api/projects", data=nested, headers={**JSON, **AUTH})
    assert response.status_code == 422  # parsed fine; `name` is not a string
    assert (await response.get_json())["detail"][0]["field"] == "name"
