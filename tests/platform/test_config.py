"""Settings: defaults, the environment, and URLs derived from them."""

from __future__ import annotations

from pathlib import Path

import pytest

from gobuild.platform.config import (
    ENV_PREFIX,
    AuthSettings,
    GatewaySettings,
    NotificationSettings,
    RetentionSettings,
    Settings,
)


def test_settings_come_from_gobuild_environment_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GOBUILD_GATEWAY_PORT", "9090")
    monkeypatch.setenv("GOBUILD_DEPLOY_DOMAIN", "apps.example.com")
    monkeypatch.setenv("GOBUILD_BUILD_MEMORY_MB", "256")
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert (settings.gateway_port, settings.deploy_domain, settings.build_memory_mb) == (
        9090,
        "apps.example.com",
        256,
    )
    assert settings.data_dir.is_absolute()


def test_a_bad_value_is_refused_naming_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GOBUILD_BUILD_MEMORY_MB", "lots")
    with pytest.raises(ValueError, match="build_memory_mb"):
        Settings(_env_file=None)  # type: ignore[call-arg]


def test_deployment_urls_use_the_gateway_port_or_the_public_url() -> None:
    local = Settings(_env_file=None, gateway_port=8080)  # type: ignore[call-arg]
    assert local.deployment_url("site") == "http://site.localhost:8080/"
    behind_proxy = Settings(
        _env_file=None,  # type: ignore[call-arg]
        public_url="https://gobuild.example.com",
        deploy_domain="example.app",
    )
    assert behind_proxy.deployment_url("site-abc") == "https://site-abc.example.app/"
    assert behind_proxy.gateway_public_url == "https://gobuild.example.com"


def test_every_setting_is_documented_in_env_example() -> None:
    example = (Path(__file__).resolve().parents[2] / ".env.example").read_text()
    documented = {
        line.split("=", 1)[0].strip()
        for line in example.splitlines()
        if line.startswith(ENV_PREFIX) and "=" in line
    }
    fields = {
        ENV_PREFIX + name.upper()
        for model in (
            Settings,
            AuthSettings,
            GatewaySettings,
            NotificationSettings,
            RetentionSettings,
        )
        for name in model.model_fields
    }
    assert fields - documented == set()
    assert documented - fields - {"GOBUILD_LOG_LEVEL"} == set()
