"""Rate limits and the login lockout, as a client sees them: statuses and headers."""

from __future__ import annotations

from tests.gateway.conftest import StartGateway
from tests.gateway.support import ADMIN_PASSWORD, AUTH, bearer, fixture_body


async def test_exactly_n_api_requests_pass_in_a_window_then_429_with_the_headers(
    start_gateway: StartGateway,
) -> None:
    limit = 5
    gateway = await start_gateway(auth={"rate_limit_api_requests": limit})
    jane = await gateway.user_headers("jane")  # a login: the login budget, not the API's

    for n in range(limit):
        response = await gateway.client.get("/api/me", headers=jane)
        assert response.status_code == 200, n
        assert response.headers["RateLimit-Limit"] == str(limit)
        assert response.headers["RateLimit-Remaining"] == str(limit - 1 - n)
        assert 0 < int(response.headers["RateLimit-Reset"]) <= 60
        assert "Retry-After" not in response.headers

    refused = await gateway.client.get("/api/me", headers=jane)
    assert refused.status_code == 429
    assert (await refused.get_json())["error"] == "too many requests"
    assert refused.headers["RateLimit-Limit"] == str(limit)
    assert refused.headers["RateLimit-Remaining"] == "0"
    assert 0 < int(refused.headers["Retry-After"]) <= 60
    assert 0 < int(refused.headers["RateLimit-Reset"]) <= 60

    # Budgets are per caller: the admin key (which made one request) still has its own.
    response = await gateway.client.get("/api/me", headers=AUTH)
    assert response.status_code == 200
    assert response.headers["RateLimit-Remaining"] == str(limit - 2)


async def test_an_api_key_spends_a_budget_of_its_own(start_gateway: StartGateway) -> None:
    gateway = await start_gateway(auth={"rate_limit_api_requests": 3})
    jane = await gateway.user_headers("jane")
    key = bearer((await gateway.create_key(jane, "builds:read"))["key"])  # 1 of jane's 3
    statuses = [(await gateway.client.get("/api/me", headers=key)).status_code for _ in range(4)]
    assert statuses == [200, 200, 200, 429]
    response = await gateway.client.get("/api/me", headers=jane)
    assert response.status_code == 200
    assert response.headers["RateLimit-Remaining"] == "1"


async def test_login_attempts_have_their_own_budget_per_client(
    start_gateway: StartGateway,
) -> None:
    gateway = await start_gateway(auth={"rate_limit_login_requests": 3})
    for n in range(3):
        response = await gateway.client.post(
            "/api/auth/login", json={"username": f"user{n}", "password": "guess-1234"}
        )
        assert response.status_code == 401
        assert response.headers["RateLimit-Remaining"] == str(2 - n)
    response = await gateway.client.post(
        "/api/auth/login", json={"username": "admin", "password": ADMIN_PASSWORD}
    )
    assert response.status_code == 429
    assert response.headers["RateLimit-Limit"] == "3" and "Retry-After" in response.headers
    # The API budget is untouched.
    assert (await gateway.client.get("/api/me", headers=AUTH)).status_code == 200


async def test_failed_credentials_spend_the_login_budget(start_gateway: StartGateway) -> None:
    gateway = await start_gateway(auth={"rate_limit_login_requests": 2})
    for _ in range(2):
        response = await gateway.client.get("/api/me", headers={"Authorization": "Bearer gb_x"})
        assert response.status_code == 401
    response = await gateway.client.get("/api/me", headers={"Authorization": "Bearer gb_x"})
    assert response.status_code == 429


async def test_repeated_failed_logins_lock_the_account(start_gateway: StartGateway) -> None:
    gateway = await start_gateway(auth={"login_lockout_threshold": 3, "login_lockout_seconds": 120})
    statuses = []
    for _ in range(3):
        response = await gateway.client.post(
            "/api/auth/login", json={"username": "admin", "password": "wrong-password"}
        )
        statuses.append(response.status_code)
    assert statuses == [401, 401, 429]
    # Now even the right password is refused until the lock ends.
    response = await gateway.client.post(
        "/api/auth/login", json={"username": "admin", "password": ADMIN_PASSWORD}
    )
    assert response.status_code == 429
    body = await response.get_json()
    assert body["error"] == "account locked"
    assert 110 <= int(response.headers["Retry-After"]) <= 120
    # Other accounts are not locked.
    await gateway.create_user("jane")
    await gateway.login("jane")


async def test_webhooks_have_their_own_budget(start_gateway: StartGateway) -> None:
    gateway = await start_gateway(auth={"rate_limit_webhook_requests": 2})
    payload = fixture_body("github/push-branch-created.json")
    for n in range(2):
        response = await gateway.github_push(payload, "some-secret-0123456789", f"d-{n}")
        assert response.status_code == 404  # no project: but counted
        assert response.headers["RateLimit-Remaining"] == str(1 - n)
    response = await gateway.github_push(payload, "some-secret-0123456789", "d-3")
    assert response.status_code == 429
    assert "Retry-After" in response.headers
    assert (await gateway.client.get("/api/me", headers=AUTH)).status_code == 200
