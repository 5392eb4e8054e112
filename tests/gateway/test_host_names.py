"""The gateway's own hosts are never deployments, and project names cannot take them."""

from __future__ import annotations

from typing import Any

import pytest

from gobuild.platform.config import GatewaySettings, Settings
from gobuild.platform.gateway.host_names import (
    RESERVED_PROJECT_NAMES,
    deployment_host_label,
    deployment_label,
    reserved_project_names,
)
from tests.gateway.conftest import StartGateway
from tests.gateway.support import AUTH


def settings(**values: Any) -> Settings:
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


def gateway_settings(**values: Any) -> GatewaySettings:
    return GatewaySettings(_env_file=None, **values)  # type: ignore[call-arg]


def test_fixed_names_of_the_platform_are_reserved() -> None:
    names = {"api", "www", "app", "admin", "auth", "dashboard", "docs", "status", "webhooks"}
    assert names | {"static", "assets", "mail"} == RESERVED_PROJECT_NAMES


def test_public_and_dashboard_hosts_under_the_deploy_domain_reserve_their_first_label() -> None:
    reserved = reserved_project_names(
        settings(public_url="https://ci.example.com", deploy_domain="example.com"),
        gateway_settings(dashboard_url="https://Console.Example.com/login"),
    )
    assert reserved == RESERVED_PROJECT_NAMES | {"ci", "console"}


def test_hosts_outside_the_deploy_domain_reserve_nothing_more() -> None:
    reserved = reserved_project_names(
        settings(public_url="https://gobuild.corp.net", deploy_domain="example.app"),
        gateway_settings(dashboard_url="https://deep.ci.example.app"),
    )
    assert reserved == RESERVED_PROJECT_NAMES


@pytest.mark.parametrize(
    ("host", "label"),
    [
        ("site.example.com", "site"),
        ("SITE.example.com:8443", "site"),
        ("site.example.com.", "site"),
        ("example.com", None),
        ("a.b.example.com", None),
        ("site.example.org", None),
    ],
)
def test_deployment_label_is_the_first_label_under_the_deploy_domain(
    host: str, label: str | None
) -> None:
    assert deployment_label(host, "example.com") == label


def test_the_public_host_is_never_served_as_a_deployment() -> None:
    config = settings(public_url="http://api.example.com", deploy_domain="example.com")
    dashboard = gateway_settings(dashboard_url="https://app.example.com")
    for host in ("api.example.com", "API.example.com:80", "app.example.com"):
        assert deployment_host_label(host, config, dashboard) is None
    assert deployment_host_label("site.example.com", config, dashboard) == "site"


async def test_creating_a_project_with_a_reserved_name_is_422_with_a_clear_message(
    start_gateway: StartGateway,
) -> None:
    gateway = await start_gateway(gateway={"dashboard_url": "http://console.localhost:3000"})
    for name in ("api", "www", "webhooks", "console"):
        response = await gateway.client.post(
            "/api/projects",
            json={"name": name, "repo_url": "https://github.com/me/site.git"},
            headers=AUTH,
        )
        assert response.status_code == 422, name
        body = await response.get_json()
        assert body["error"] == "project name is reserved"
        assert f"'{name}' is, or could become, one of GoBuild's own host names" in body["detail"]
    assert (await gateway.create_project(name="apis"))["name"] == "apis"

    # The dashboard's host reaches the gateway's routes, not a deployment lookup.
    response = await gateway.client.get("/healthz", headers={"Host": "console.localhost:3000"})
    assert response.status_code == 200
    assert await response.get_json() == {"status": "ok"}
    response = await gateway.client.get("/healthz", headers={"Host": "nothing.localhost"})
    assert response.status_code == 404
    assert (await response.get_json())["error"] == "no deployment at this host"
