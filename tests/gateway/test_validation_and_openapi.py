"""Request validation at the edge (413, 422 naming the field) and the OpenAPI description."""

from __future__ import annotations

import re

from tests.gateway.conftest import StartGateway
from tests.gateway.support import AUTH, Gateway


async def test_oversized_api_body_is_413_json(start_gateway: StartGateway) -> None:
    gateway = await start_gateway(gateway={"max_api_body_bytes": 2048})
    body = {"name": "site", "repo_url": "https://example.com/r.git", "padding": "x" * 4096}
    response = await gateway.client.post("/api/projects", json=body, headers=AUTH)
    assert response.status_code == 413
    assert await response.get_json() == {
        "error": "request body too large",
        "detail": "limit is 2048 bytes",
    }
    # Even before the caller is known.
    response = await gateway.client.post("/api/auth/login", json=body)
    assert response.status_code == 413


async def test_wrong_types_are_422_naming_the_field(gateway: Gateway) -> None:
    cases = [
        ("/api/projects", {"name": 123, "repo_url": "https://example.com/r.git"}, "name"),
        (
            "/api/projects",
            {"name": "site", "repo_url": "https://example.com/r.git", "build_tags": "often"},
            "build_tags",
        ),
        ("/api/users", {"username": "jane", "password": ["a", "list"]}, "password"),
        ("/api/keys", {"name": "ci", "scopes": "builds:read"}, "scopes"),
        ("/api/keys", {"name": "ci", "scopes": ["builds:everything"]}, "scopes.0"),
        ("/api/auth/login", {"username": "admin", "password": 12345678}, "password"),
        ("/api/auth/refresh", {"refresh_token": None}, "refresh_token"),
    ]
    jane = await gateway.user_headers("jane")
    for path, body, field in cases:
        headers = jane if path == "/api/keys" else AUTH
        response = await gateway.client.post(path, json=body, headers=headers)
        assert response.status_code == 422, (path, body)
        error = await response.get_json()
        assert [d["field"] for d in error["detail"]] == [field], (path, body)
        assert field in error["error"]


async def test_unknown_fields_are_422_naming_them(gateway: Gateway) -> None:
    response = await gateway.client.post(
        "/api/auth/login", json={"username": "admin", "password": "x", "remember": True}
    )
    assert response.status_code == 422
    assert (await response.get_json())["detail"][0]["field"] == "remember"


async def test_query_strings_are_validated(gateway: Gateway) -> None:
    project = await gateway.create_project()
    for limit in ("0", "501", "many"):
        response = await gateway.client.get(
            f"/api/projects/{project['id']}/builds?limit={limit}", headers=AUTH
        )
        assert response.status_code == 422, limit
        assert (await response.get_json())["detail"][0]["field"] == "limit"


async def test_openapi_describes_every_route_its_auth_and_its_errors(gateway: Gateway) -> None:
    spec = await (await gateway.client.get("/openapi.json")).get_json()
    schemes = spec["components"]["securitySchemes"]
    assert schemes["bearer"] == {
        "scheme": "bearer",
        "bearerFormat": "JWT access token, gb_ API key or the admin API key",
        "type": "http",
    }
    assert schemes["basic"]["scheme"] == "basic"
    assert {"bearer": []} in spec["security"] and {"basic": []} in spec["security"]

    app = gateway.client.app
    documented = {
        (path, method) for path, operations in spec["paths"].items() for method in operations
    }
    for rule in app.url_map.iter_rules():
        if rule.endpoint in {"static", "openapi", "redoc_ui", "scalar_ui", "swagger_ui"}:
            continue
        path = re.sub(r"<(?:[^:>]*:)?([^>]+)>", r"{\1}", rule.rule)
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            assert (path, method.lower()) in documented, (path, method)

    public = {
        "/api/auth/login",
        "/api/auth/refresh",
        "/api/auth/exchange",
        "/healthz",
        "/readyz",
        "/webhooks/github",
        "/webhooks/gitlab",
        "/auth/{provider}/login",
        "/auth/{provider}/callback",
        "/",
        "/api/shared/{token}",
        "/api/shared/{token}/logs",
        "/api/shared/{token}/artifact",
        "/api/shared/{token}/resources",
    }
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            responses = operation["responses"]
            if path in public:
                assert operation["security"] == [], (path, method)
            else:
                assert "security" not in operation, (path, method)  # the global schemes
                assert {"401", "403"} <= responses.keys(), (path, method)
            if path.startswith(("/api/", "/auth/", "/webhooks/")):
                assert "Retry-After" in responses["429"]["headers"], (path, method)
            if "requestBody" in operation:
                assert {"413", "422"} <= responses.keys(), (path, method)
            error = responses.get("404") or responses.get("401")
            if error is not None:
                assert error["content"]["application/json"]["schema"] == {
                    "$ref": "#/components/schemas/ErrorBody"
                }

    github = spec["paths"]["/webhooks/github"]["post"]
    assert {"202", "200", "401", "503"} <= github["responses"].keys()
    assert "x-hub-signature-256" in {p["name"] for p in github["parameters"]}
    # werkzeug's `any` converter keeps its choices in a set: their order varies by run.
    provider = spec["paths"]["/auth/{provider}/login"]["get"]["parameters"][0]["schema"]
    assert sorted(provider["enum"]) == ["github", "gitlab"]
    assert spec["paths"]["/api/builds/{build_id}/logs"]["get"]["responses"]["200"]["content"] == {
        "text/plain": {"schema": {"type": "string"}}
    }
