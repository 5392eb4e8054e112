"""Password login, JWT access tokens, refresh rotation and logout, through the HTTP API."""

from __future__ import annotations

import base64
import json
import time

from joserfc import jwt
from joserfc.jwk import OctKey

from gobuild.platform.auth.tokens import access_token_key, encode_access_token
from tests.gateway.conftest import StartGateway, auth_settings
from tests.gateway.support import ADMIN_PASSWORD, AUTH, JWT_SECRET, PASSWORD, Gateway, bearer


def b64(data: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def unb64(part: str) -> dict[str, object]:
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))


async def me(gateway: Gateway, headers: dict[str, str]) -> tuple[int, dict[str, object]]:
    response = await gateway.client.get("/api/me", headers=headers)
    return response.status_code, await response.get_json()


async def test_initial_admin_logs_in_with_a_password_and_gets_a_token_pair(
    gateway: Gateway,
) -> None:
    pair = await gateway.login("admin", ADMIN_PASSWORD)
    assert pair["token_type"] == "bearer"
    assert pair["expires_in"] == 900
    assert pair["access_token"].count(".") == 2 and pair["refresh_token"]
    claims = unb64(pair["access_token"].split(".")[1])
    assert claims["sub"] == "admin" and claims["roles"] == ["admin"]
    assert {"iat", "exp", "jti", "iss", "aud", "projects"} <= claims.keys()
    assert claims["exp"] - claims["iat"] == 900

    status, body = await me(gateway, bearer(pair["access_token"]))
    assert status == 200
    assert body["username"] == "admin" and body["kind"] == "user" and body["is_admin"] is True


async def test_wrong_password_is_401_and_names_no_account(gateway: Gateway) -> None:
    for username in ("admin", "nobody"):
        response = await gateway.client.post(
            "/api/auth/login", json={"username": username, "password": "wrong-password"}
        )
        assert response.status_code == 401
        assert (await response.get_json())["detail"] == "invalid username or password"


async def test_expired_tampered_wrong_key_alg_none_and_wrong_audience_tokens_are_401(
    gateway: Gateway,
) -> None:
    await gateway.create_user("jane")
    good = (await gateway.login("jane"))["access_token"]
    assert (await me(gateway, bearer(good)))[0] == 200

    settings = auth_settings()
    key = access_token_key(JWT_SECRET)
    expired, _ = encode_access_token(key, settings, "jane", [], {}, now=int(time.time()) - 2 * 900)
    header, payload, signature = good.split(".")
    tampered = ".".join([header, b64({**unb64(payload), "roles": ["admin"]}), signature])
    wrong_key, _ = encode_access_token(access_token_key("x" * 48), settings, "jane", [], {})
    raw_secret = jwt.encode({"alg": "HS256"}, unb64(payload), OctKey.import_key(JWT_SECRET))
    alg_none = ".".join([b64({"alg": "none", "typ": "JWT"}), payload, ""])
    wrong_audience, _ = encode_access_token(
        key, auth_settings(jwt_audience="someone-else"), "jane", [], {}
    )
    wrong_issuer, _ = encode_access_token(key, auth_settings(jwt_issuer="evil"), "jane", [], {})

    for name, token in {
        "expired": expired,
        "tampered": tampered,
        "wrong key": wrong_key,
        "signed with the raw secret": raw_secret,
        "alg none": alg_none,
        "wrong audience": wrong_audience,
        "wrong issuer": wrong_issuer,
    }.items():
        status, body = await me(gateway, bearer(token))
        assert status == 401, name
        assert body["error"] == "invalid credentials", name
        assert body["detail"].startswith("invalid access token"), name


async def test_refresh_rotates_and_reusing_an_old_refresh_token_revokes_the_login(
    gateway: Gateway,
) -> None:
    await gateway.create_user("jane")
    first = await gateway.login("jane")

    response = await gateway.client.post(
        "/api/auth/refresh", json={"refresh_token": first["refresh_token"]}
    )
    assert response.status_code == 200
    second = await response.get_json()
    assert second["refresh_token"] != first["refresh_token"]
    assert (await me(gateway, bearer(second["access_token"])))[0] == 200

    # The used token presented again: the whole family is revoked, the newest token too.
    reuse = await gateway.client.post(
        "/api/auth/refresh", json={"refresh_token": first["refresh_token"]}
    )
    assert reuse.status_code == 401
    assert "already used" in (await reuse.get_json())["detail"]
    after = await gateway.client.post(
        "/api/auth/refresh", json={"refresh_token": second["refresh_token"]}
    )
    assert after.status_code == 401

    # Another login of the same user is its own family and keeps working.
    other = await gateway.login("jane")
    response = await gateway.client.post(
        "/api/auth/refresh", json={"refresh_token": other["refresh_token"]}
    )
    assert response.status_code == 200


async def test_reusing_a_refresh_token_locks_out_the_access_tokens_of_that_login_at_once(
    gateway: Gateway,
) -> None:
    await gateway.create_user("jane")
    stolen = await gateway.login("jane")
    other_login = await gateway.login("jane")
    response = await gateway.client.post(
        "/api/auth/refresh", json={"refresh_token": stolen["refresh_token"]}
    )
    rotated = await response.get_json()
    for pair in (stolen, rotated, other_login):
        assert (await me(gateway, bearer(pair["access_token"])))[0] == 200

    # The attacker replays the used refresh token: every token of that login stops working,
    # the access tokens too (not only when they expire); the other login keeps working.
    reuse = await gateway.client.post(
        "/api/auth/refresh", json={"refresh_token": stolen["refresh_token"]}
    )
    assert reuse.status_code == 401
    for pair in (stolen, rotated):
        status, body = await me(gateway, bearer(pair["access_token"]))
        assert status == 401
        assert body["detail"] == "invalid access token: it was revoked"
    assert (await me(gateway, bearer(other_login["access_token"])))[0] == 200


async def test_logout_revokes_the_access_token_and_the_refresh_token_at_once(
    gateway: Gateway,
) -> None:
    await gateway.create_user("jane")
    pair = await gateway.login("jane")
    headers = bearer(pair["access_token"])
    response = await gateway.client.post(
        "/api/auth/logout", json={"refresh_token": pair["refresh_token"]}, headers=headers
    )
    assert response.status_code == 204
    assert (await me(gateway, headers))[0] == 401
    response = await gateway.client.post(
        "/api/auth/refresh", json={"refresh_token": pair["refresh_token"]}
    )
    assert response.status_code == 401


async def test_logout_without_a_body_revokes_the_access_token(gateway: Gateway) -> None:
    await gateway.create_user("jane")
    headers = bearer((await gateway.login("jane"))["access_token"])
    assert (await gateway.client.post("/api/auth/logout", headers=headers)).status_code == 204
    assert (await me(gateway, headers))[0] == 401


async def test_a_token_follows_the_users_current_roles(gateway: Gateway) -> None:
    headers = await gateway.user_headers("jane")
    project = await gateway.create_project()
    assert (await me(gateway, headers))[1]["projects"] == {}
    response = await gateway.client.post(
        f"/api/projects/{project['id']}/members",
        json={"username": "jane", "role": "viewer"},
        headers=AUTH,
    )
    assert response.status_code == 200
    # Same token, new membership: roles are read on every request.
    assert (await me(gateway, headers))[1]["projects"] == {project["id"]: "viewer"}


async def test_a_deleted_users_token_is_401(gateway: Gateway) -> None:
    headers = await gateway.user_headers("jane")
    assert (await gateway.client.delete("/api/users/jane", headers=AUTH)).status_code == 204
    assert (await me(gateway, headers))[0] == 401


async def test_password_change_needs_the_current_password_and_ends_other_logins(
    gateway: Gateway,
) -> None:
    await gateway.create_user("jane")
    pair = await gateway.login("jane")
    headers = bearer(pair["access_token"])
    wrong = await gateway.client.post(
        "/api/me/password",
        json={"current_password": "not-it", "new_password": "new-password-2"},
        headers=headers,
    )
    assert wrong.status_code == 403
    response = await gateway.client.post(
        "/api/me/password",
        json={"current_password": PASSWORD, "new_password": "new-password-2"},
        headers=headers,
    )
    assert response.status_code == 204
    refresh = await gateway.client.post(
        "/api/auth/refresh", json={"refresh_token": pair["refresh_token"]}
    )
    assert refresh.status_code == 401
    await gateway.login("jane", "new-password-2")


async def test_basic_user_password_works_only_when_allowed(start_gateway: StartGateway) -> None:
    gateway = await start_gateway(auth={"allow_password_basic": True})
    await gateway.create_user("jane")
    token = base64.b64encode(f"jane:{PASSWORD}".encode()).decode()
    status, body = await me(gateway, {"Authorization": f"Basic {token}"})
    assert status == 200 and body["username"] == "jane"


async def test_generated_initial_admin_password_is_logged_once(
    start_gateway: StartGateway, caplog
) -> None:
    caplog.set_level("WARNING", logger="gobuild.platform.gateway.app")
    gateway = await start_gateway(auth={"initial_admin_password": ""})
    lines = [r.getMessage() for r in caplog.records if "first admin user" in r.getMessage()]
    assert len(lines) == 1
    password = lines[0].split("with password ")[1].split(" ")[0]
    pair = await gateway.login("admin", password)
    assert pair["access_token"]
