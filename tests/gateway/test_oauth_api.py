"""Sign in with GitHub and GitLab through the gateway routes.

Only the providers' endpoints are replaced (respx); Redis, the cookie session and the
one-time code exchange are real.
"""

from __future__ import annotations

import base64
import hashlib
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import respx

from tests.gateway.conftest import StartGateway
from tests.gateway.support import AUTH, GITLAB_URL, Gateway, bearer

GITHUB_TOKEN_URL = "https://github.com/login/oauth/access_token"
GITHUB_USER_URL = "https://api.github.com/user"


def query(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


def s256(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode()).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def mock_github(
    mock: respx.MockRouter,
    *,
    user_id: int = 583231,
    login: str = "octocat",
    email: str = "octocat@github.com",
    verified: bool = True,
) -> respx.Route:
    token = mock.post(GITHUB_TOKEN_URL).mock(
        return_value=httpx.Response(200, json={"access_token": "gho_x", "token_type": "bearer"})
    )
    mock.get(GITHUB_USER_URL).mock(
        return_value=httpx.Response(
            200, json={"id": user_id, "login": login, "name": "The Octocat", "email": None}
        )
    )
    mock.get(f"{GITHUB_USER_URL}/emails").mock(
        return_value=httpx.Response(
            200, json=[{"email": email, "primary": True, "verified": verified}]
        )
    )
    return token


def mock_gitlab(
    mock: respx.MockRouter, *, user_id: int = 7, email: str, confirmed: bool
) -> respx.Route:
    token = mock.post(f"{GITLAB_URL}/oauth/token").mock(
        return_value=httpx.Response(200, json={"access_token": "glat", "token_type": "Bearer"})
    )
    mock.get(f"{GITLAB_URL}/api/v4/user").mock(
        return_value=httpx.Response(
            200,
            json={
                "id": user_id,
                "username": "Jane.Doe",
                "name": "Jane Doe",
                "email": email,
                "confirmed_at": "2024-01-01T00:00:00Z" if confirmed else None,
            },
        )
    )
    return token


async def start_sign_in(gateway: Gateway, provider: str) -> dict[str, str]:
    response = await gateway.client.get(f"/auth/{provider}/login")
    assert response.status_code == 302
    return query(response.headers["Location"])


async def sign_in(gateway: Gateway, provider: str, **user: Any) -> Any:
    """The whole browser flow; returns the callback's response."""
    params = await start_sign_in(gateway, provider)
    with respx.mock(assert_all_called=True) as mock:
        if provider == "github":
            mock_github(mock, **user)
        else:
            mock_gitlab(mock, **user)
        return await gateway.client.get(
            f"/auth/{provider}/callback?code=the-code&state={params['state']}"
        )


async def exchange(gateway: Gateway, code: str) -> Any:
    return await gateway.client.post("/api/auth/exchange", json={"code": code})


async def test_github_sign_in_opens_a_session_and_hands_tokens_over_by_a_one_time_code(
    gateway: Gateway,
) -> None:
    params = await start_sign_in(gateway, "github")
    callback = f"{gateway.settings.gateway_public_url}/auth/github/callback"
    assert params["redirect_uri"] == callback
    assert params["code_challenge_method"] == "S256" and len(params["state"]) >= 32

    with respx.mock(assert_all_called=True) as mock:
        token_route = mock_github(mock)
        response = await gateway.client.get(
            f"/auth/github/callback?code=the-code&state={params['state']}"
        )
    assert response.status_code == 302
    sent = parse_qs(token_route.calls.last.request.content.decode())
    assert s256(sent["code_verifier"][0]) == params["code_challenge"]

    landing = response.headers["Location"]
    assert landing.startswith(f"{gateway.settings.gateway_public_url}/?code=")
    assert "token" not in landing and "#" not in landing
    # The browser now has a session cookie that the API accepts.
    me = await gateway.client.get("/api/me")
    assert me.status_code == 200
    assert (await me.get_json())["username"] == "octocat"

    code = query(landing)["code"]
    first = await exchange(gateway, code)
    assert first.status_code == 200
    pair = await first.get_json()
    assert (
        await gateway.client.get("/api/me", headers=bearer(pair["access_token"]))
    ).status_code == 200
    assert (await exchange(gateway, code)).status_code == 401  # used once


async def test_gitlab_sign_in_on_a_self_hosted_instance(start_gateway: StartGateway) -> None:
    gateway = await start_gateway(gateway={"dashboard_url": "https://dash.example.com/signed-in"})
    params = await start_sign_in(gateway, "gitlab")
    assert params["scope"] == "read_user"
    response = await sign_in_with_state(gateway, "gitlab", params["state"])
    assert response.status_code == 302
    landing = response.headers["Location"]
    assert landing.startswith("https://dash.example.com/signed-in?code=")
    pair = await (await exchange(gateway, query(landing)["code"])).get_json()
    me = await gateway.client.get("/api/me", headers=bearer(pair["access_token"]))
    assert (await me.get_json())["username"] == "jane.doe"


async def sign_in_with_state(gateway: Gateway, provider: str, state: str) -> Any:
    with respx.mock(assert_all_called=True) as mock:
        mock_gitlab(mock, email="jane@example.com", confirmed=True)
        return await gateway.client.get(f"/auth/{provider}/callback?code=c&state={state}")


async def test_callback_with_a_state_that_does_not_match_is_rejected(gateway: Gateway) -> None:
    params = await start_sign_in(gateway, "github")
    with respx.mock(assert_all_called=False) as mock:
        token_route = mock_github(mock)
        forged = await gateway.client.get("/auth/github/callback?code=c&state=forged-state")
        missing = await gateway.client.get("/auth/github/callback?code=c")
        # The right state, but from another browser (no state cookie): login CSRF.
        other_browser = gateway.client.app.test_client()
        stolen = await other_browser.get(f"/auth/github/callback?code=c&state={params['state']}")
    for response in (forged, missing, stolen):
        assert response.status_code == 400
        assert "state" in (await response.get_json())["detail"]
    assert not token_route.called
    assert (await gateway.client.get("/api/me")).status_code == 401
    users = await (await gateway.client.get("/api/users", headers=AUTH)).get_json()
    assert [u["username"] for u in users["users"]] == ["admin"]


async def test_a_used_state_cannot_complete_a_second_sign_in(gateway: Gateway) -> None:
    params = await start_sign_in(gateway, "github")
    with respx.mock() as mock:
        mock_github(mock)
        url = f"/auth/github/callback?code=c&state={params['state']}"
        assert (await gateway.client.get(url)).status_code == 302
        await gateway.client.get(url.replace("/callback", "/login"))  # a fresh state cookie
        again = await gateway.client.get(url)
    assert again.status_code == 400


async def test_provider_refusal_is_shown_and_signs_nobody_in(gateway: Gateway) -> None:
    await start_sign_in(gateway, "github")
    response = await gateway.client.get("/auth/github/callback?error=access_denied")
    assert response.status_code == 400
    assert "access_denied" in (await response.get_json())["detail"]


async def test_sign_in_links_to_an_existing_user_by_verified_email_only(
    gateway: Gateway,
) -> None:
    response = await gateway.client.post(
        "/api/users",
        json={
            "username": "jane",
            "password": "password-123",
            "email": "jane@example.com",
            "email_verified": True,
        },
        headers=AUTH,
    )
    assert response.status_code == 201

    # GitHub says the address is not verified: a new account, not Jane's.
    unverified = await sign_in(
        gateway, "github", user_id=1, login="jane-gh", email="jane@example.com", verified=False
    )
    pair = await (await exchange(gateway, query(unverified.headers["Location"])["code"])).get_json()
    me = await (
        await gateway.client.get("/api/me", headers=bearer(pair["access_token"]))
    ).get_json()
    assert me["username"] == "jane-gh"

    # GitLab confirmed the same address: this is Jane, linked to her account.
    verified = await sign_in(gateway, "gitlab", email="jane@example.com", confirmed=True)
    pair = await (await exchange(gateway, query(verified.headers["Location"])["code"])).get_json()
    me = await (
        await gateway.client.get("/api/me", headers=bearer(pair["access_token"]))
    ).get_json()
    assert me["username"] == "jane"


async def test_unconfigured_provider_has_no_sign_in(start_gateway: StartGateway) -> None:
    gateway = await start_gateway(auth={"gitlab_client_id": "", "gitlab_client_secret": ""})
    response = await gateway.client.get("/auth/gitlab/login")
    assert response.status_code == 404
    assert (await gateway.client.get("/auth/bitbucket/login")).status_code == 404


async def test_logout_ends_the_browser_session(gateway: Gateway) -> None:
    response = await sign_in(gateway, "github")
    assert response.status_code == 302
    assert (await gateway.client.get("/api/me")).status_code == 200
    origin = {"Origin": gateway.settings.gateway_public_url}
    assert (await gateway.client.post("/api/auth/logout", headers=origin)).status_code == 204
    assert (await gateway.client.get("/api/me")).status_code == 401


async def test_cookie_session_refuses_cross_site_changes(gateway: Gateway) -> None:
    await sign_in(gateway, "github")
    response = await gateway.client.post(
        "/api/projects",
        json={"name": "site", "repo_url": "https://github.com/octocat/site.git"},
        headers={"Origin": "https://evil.example.com"},
    )
    assert response.status_code == 403
    assert (await response.get_json())["error"] == "cross-site request refused"
    response = await gateway.client.post(
        "/api/projects", json={"name": "site", "repo_url": "https://github.com/octocat/site.git"}
    )
    assert response.status_code == 201
