"""Which host names serve deployments and which belong to GoBuild itself.

`<deployment-id>.<deploy domain>` and `<project>.<deploy domain>` serve deployments. The
gateway's public host and the dashboard's host never do, even when they are subdomains of the
deploy domain, and project names that are (or would shadow) GoBuild's own hosts are reserved.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from gobuild.platform.config import GatewaySettings, Settings

# Names a platform keeps for itself; a project named `api` would own `api.<deploy domain>`.
RESERVED_PROJECT_NAMES = frozenset(
    {
        "admin",
        "api",
        "app",
        "assets",
        "auth",
        "dashboard",
        "docs",
        "mail",
        "static",
        "status",
        "webhooks",
        "www",
    }
)


def host_name(host: str) -> str:
    """A Host header without its port, lower case, without a trailing dot."""
    name = host if host.endswith("]") else host.rsplit(":", 1)[0]
    return name.lower().rstrip(".")


def deployment_label(host: str, deploy_domain: str) -> str | None:
    """The first label of `host` if it is a direct subdomain of the deploy domain."""
    name = host_name(host)
    suffix = "." + deploy_domain.lower().strip(".")
    if not name.endswith(suffix):
        return None
    label = name[: -len(suffix)]
    return label if label and "." not in label else None


def gateway_hosts(settings: Settings, gateway_settings: GatewaySettings) -> frozenset[str]:
    """The host names of the gateway's public URL and of the dashboard."""
    urls = (settings.gateway_public_url, gateway_settings.dashboard_url)
    return frozenset(
        host_name(hostname) for url in urls if url and (hostname := urlsplit(url).hostname)
    )


def reserved_project_names(settings: Settings, gateway_settings: GatewaySettings) -> frozenset[str]:
    """Names no project may take: the fixed list, and the first label of the public and
    dashboard hosts when they sit directly under the deploy domain."""
    labels = (
        deployment_label(host, settings.deploy_domain)
        for host in gateway_hosts(settings, gateway_settings)
    )
    return RESERVED_PROJECT_NAMES | {label for label in labels if label}


def deployment_host_label(
    host: str, settings: Settings, gateway_settings: GatewaySettings
) -> str | None:
    """The deployment (or project) label a request's Host names; None for the gateway's own
    hosts and for hosts outside the deploy domain."""
    if host_name(host) in gateway_hosts(settings, gateway_settings):
        return None
    return deployment_label(host, settings.deploy_domain)
