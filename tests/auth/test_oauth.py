"""Sign in with GitHub / GitLab: PKCE, single-use state, account linking, login codes.

Only the providers' HTTP endpoints are mocked (respx); Redis is real.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import respx

from gobuild.platform.auth.oauth import OAuthError, OAuthSignIn, ProviderUser, enabled_providers
from gobuild.platform.auth.service import AuthService
from gobuild.platform.config import AuthSettings

REDIRECT = "http://localhost:8080/auth/github/callback"
GITLAB_REDIRECT = "http://localhost:8080/auth/gitlab/callback"
GITHUB_TOKEN_URL = "https://github.com/login/oauth/access_token"
GITHUB_USER_URL = "https://api.github.com/user"
GITLAB = "https://gitlab.example.com"


def query(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


def s256(verifier: str) -> str:
    return (
        base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    )


def mock_github(
    mock: respx.MockRouter,
    *,
    login: str = "octocat",
    user_id: int = 583231,
    emails: list[dict[str, object]] | None = None,
) -> respx.Route:
    token = mock.post(GITHUB_TOKEN_URL).mock(
        return_value=httpx.Response(
            200, json={"access_token": "gho_abc", "token_type": "bearer", "scope": "read:user"}
        )
    )
    mock.get(GITHUB_USER_URL).mock(
        return_value=httpx.Response(
            200, json={"id": user_id, "login": login, "name": "The Octocat", "email": None}
        )
    )
    mock.get(f"{GITHUB_USER_URL}/emails").mock(
        return_value=httpx.Response(
            200,
            json=emails
            if emails is not None
            else [{"email": "octocat@github.com", "primary": True, "verified": True}],
        )
    )
    return token


async def sign_in_with_github(auth: AuthService, mock: respx.MockRouter, **user: object) -> str:
    mock_github(mock, **user)  # type: ignore[arg-type]
    _, state = await auth.oauth.authorization_url("github", REDIRECT)
    provider_user = await auth.oauth.complete("github", state, "the-code", REDIRECT)
    return await auth.oauth.sign_in(provider_user)


async def test_github_authorization_url_has_state_and_s256_pkce(auth: AuthService) -> None:
    url, state = await auth.oauth.authorization_url("github", REDIRECT)
    assert url.startswith("https://github.com/login/oauth/authorize?")
    params = query(url)
    assert params["state"] == state and len(state) >= 32
    assert params["code_challenge_method"] == "S256"
    assert len(params["code_challenge"]) == 43
    assert params["client_id"] == "gh-client"
    assert params["redirect_uri"] == REDIRECT
    assert params["response_type"] == "code"
    assert params["scope"] == "read:user user:email"


async def test_github_sign_in_happy_path(auth: AuthService) -> None:
    with respx.mock(assert_all_called=True) as mock:
        token_route = mock_github(mock)
        url, state = await auth.oauth.authorization_url("github", REDIRECT)
        provider_user = await auth.oauth.complete("github", state, "the-code", REDIRECT)

    assert provider_user == ProviderUser(
        provider="github",
        id="583231",
        username="octocat",
        email="octocat@github.com",
        email_verified=True,
        name="The Octocat",
    )
    # The code went to GitHub with the verifier matching the challenge of the redirect.
    sent = parse_qs(token_route.calls.last.request.content.decode())
    assert sent["code"] == ["the-code"]
    assert sent["grant_type"] == ["authorization_code"]
    assert sent["redirect_uri"] == [REDIRECT]
    assert sent["client_id"] == ["gh-client"] and sent["client_secret"] == ["gh-secret"]
    assert s256(sent["code_verifier"][0]) == query(url)["code_challenge"]

    username = await auth.oauth.sign_in(provider_user)
    assert username == "octocat"
    user = await auth.users.get("octocat")
    assert user is not None and user.email == "octocat@github.com" and user.email_verified
    assert user.password_hash is None
    # Signing in again finds the linked account.
    assert await auth.oauth.sign_in(provider_user) == "octocat"
    assert [u.username for u in await auth.users.list()] == ["octocat"]


async def test_gitlab_sign_in_happy_path_on_a_self_hosted_instance(auth: AuthService) -> None:
    with respx.mock(assert_all_called=True) as mock:
        token_route = mock.post(f"{GITLAB}/oauth/token").mock(
            return_value=httpx.Response(200, json={"access_token": "glat", "token_type": "Bearer"})
        )
        user_route = mock.get(f"{GITLAB}/api/v4/user").mock(
            return_value=httpx.Response(
                200,
                json={
                    "id": 7,
                    "username": "Jane.Doe",
                    "name": "Jane Doe",
                    "email": "jane@example.com",
                    "confirmed_at": "2024-01-01T00:00:00Z",
                },
            )
        )
        url, state = await auth.oauth.authorization_url("gitlab", GITLAB_REDIRECT)
        provider_user = await auth.oauth.complete("gitlab", state, "gl-code", GITLAB_REDIRECT)

    assert url.startswith(f"{GITLAB}/oauth/authorize?")
    params = query(url)
    assert params["code_challenge_method"] == "S256" and params["state"] == state
    assert params["scope"] == "read_user"
    sent = parse_qs(token_route.calls.last.request.content.decode())
    assert s256(sent["code_verifier"][0]) == params["code_challenge"]
    assert user_route.calls.last.request.headers["Authorization"] == "Bearer glat"
    assert provider_user.email_verified and provider_user.id == "7"

    assert await auth.oauth.sign_in(provider_user) == "jane.doe"


async def test_gitlab_email_without_confirmation_is_unverified(auth: AuthService) -> None:
    with respx.mock() as mock:
        mock.post(f"{GITLAB}/oauth/token").mock(
            return_value=httpx.Response(200, json={"access_token": "glat", "token_type": "Bearer"})
        )
        mock.get(f"{GITLAB}/api/v4/user").mock(
            return_value=httpx.Response(
                200, json={"id": 8, "username": "joe", "email": "joe@example.com"}
            )
        )
        _, state = await auth.oauth.authorization_url("gitlab", GITLAB_REDIRECT)
        provider_user = await auth.oauth.complete("gitlab", state, "code", GITLAB_REDIRECT)
    assert provider_user.email == "joe@example.com" and not provider_user.email_verified


async def test_unknown_state_is_rejected(auth: AuthService) -> None:
    with pytest.raises(OAuthError, match="state"):
        await auth.oauth.complete("github", "made-up-state", "code", REDIRECT)
    with pytest.raises(OAuthError, match="state"):
        await auth.oauth.complete("github", "", "code", REDIRECT)


async def test_state_is_single_use(auth: AuthService) -> None:
    with respx.mock() as mock:
        mock_github(mock)
        _, state = await auth.oauth.authorization_url("github", REDIRECT)
        await auth.oauth.complete("github", state, "the-code", REDIRECT)
        with pytest.raises(OAuthError, match="state"):
            await auth.oauth.complete("github", state, "the-code", REDIRECT)


async def test_state_of_another_provider_or_redirect_is_rejected_and_used_up(
    auth: AuthService,
) -> None:
    _, state = await auth.oauth.authorization_url("github", REDIRECT)
    with pytest.raises(OAuthError, match="another sign-in"):
        await auth.oauth.complete("gitlab", state, "code", REDIRECT)
    with pytest.raises(OAuthError, match="state"):
        await auth.oauth.complete("github", state, "code", REDIRECT)
    _, state = await auth.oauth.authorization_url("github", REDIRECT)
    with pytest.raises(OAuthError, match="another sign-in"):
        await auth.oauth.complete("github", state, "code", "http://evil.example/callback")


async def test_provider_refusing_the_code_is_reported(auth: AuthService) -> None:
    with respx.mock() as mock:
        mock.post(GITHUB_TOKEN_URL).mock(
            return_value=httpx.Response(
                200,
                json={
                    "error": "bad_verification_code",
                    "error_description": "The code passed is incorrect or expired.",
                },
            )
        )
        _, state = await auth.oauth.authorization_url("github", REDIRECT)
        with pytest.raises(OAuthError, match="incorrect or expired"):
            await auth.oauth.complete("github", state, "stale", REDIRECT)


async def test_provider_outage_is_reported(auth: AuthService) -> None:
    with respx.mock() as mock:
        mock.post(GITHUB_TOKEN_URL).mock(side_effect=httpx.ConnectTimeout("timed out"))
        _, state = await auth.oauth.authorization_url("github", REDIRECT)
        with pytest.raises(OAuthError, match="could not complete"):
            await auth.oauth.complete("github", state, "code", REDIRECT)


async def test_unconfigured_or_unknown_provider_is_refused(
    auth: AuthService, make_auth_settings: Callable[..., AuthSettings]
) -> None:
    with pytest.raises(OAuthError, match="unknown sign-in provider"):
        await auth.oauth.authorization_url("bitbucket", REDIRECT)
    settings = make_auth_settings(github_client_id="", github_client_secret="")
    assert enabled_providers(settings) == ["gitlab"]
    with pytest.raises(OAuthError, match="not configured"):
        await OAuthSignIn(auth.oauth.redis, settings, auth.users).authorization_url(
            "github", REDIRECT
        )


async def test_sign_in_links_an_existing_user_by_verified_email(auth: AuthService) -> None:
    await auth.users.create("jane", email="octocat@github.com", email_verified=True)
    with respx.mock() as mock:
        assert await sign_in_with_github(auth, mock) == "jane"
    assert await auth.users.identities("jane") == [("github", "583231")]
    assert [u.username for u in await auth.users.list()] == ["jane"]


async def test_unverified_provider_email_creates_a_new_user_instead_of_linking(
    auth: AuthService,
) -> None:
    await auth.users.create("jane", email="octocat@github.com", email_verified=True)
    emails = [{"email": "octocat@github.com", "primary": True, "verified": False}]
    with respx.mock() as mock:
        username = await sign_in_with_github(auth, mock, emails=emails)
    assert username == "octocat"
    assert await auth.users.identities("jane") == []
    user = await auth.users.get("octocat")
    assert user is not None and user.email == "octocat@github.com" and not user.email_verified


async def test_unverified_email_of_an_existing_user_does_not_link(auth: AuthService) -> None:
    await auth.users.create("jane", email="octocat@github.com", email_verified=False)
    with respx.mock() as mock:
        assert await sign_in_with_github(auth, mock) == "octocat"
    assert await auth.users.identities("jane") == []


async def test_new_user_gets_a_free_username_derived_from_the_login(auth: AuthService) -> None:
    await auth.users.create("octocat")
    await auth.users.create("octocat-2")
    with respx.mock() as mock:
        username = await sign_in_with_github(auth, mock, login="OctoCat", emails=[])
    assert username == "octocat-3"
    user = await auth.users.get(username)
    assert user is not None and user.email is None


async def test_sign_up_can_be_turned_off(
    auth: AuthService, make_auth_settings: Callable[..., AuthSettings]
) -> None:
    closed = OAuthSignIn(auth.oauth.redis, make_auth_settings(oauth_allow_signup=False), auth.users)
    stranger = ProviderUser("github", "1", "stranger", None, False, None)
    with pytest.raises(OAuthError, match="ask an admin"):
        await closed.sign_in(stranger)
    await auth.users.create("known")
    await auth.users.link_identity("github", "2", "known")
    known = ProviderUser("github", "2", "whatever", None, False, None)
    assert await closed.sign_in(known) == "known"


async def test_login_code_is_redeemed_once(auth: AuthService) -> None:
    code = await auth.oauth.issue_login_code("jane")
    assert await auth.oauth.redeem_login_code(code) == "jane"
    assert await auth.oauth.redeem_login_code(code) is None
    assert await auth.oauth.redeem_login_code("made-up") is None
    assert await auth.oauth.redeem_login_code("") is None
