"""Repository URLs: which ones GoBuild clones, for whom, and the keys a webhook payload is
matched by.

One policy serves the gateway (when a project is registered) and the builder (right before
it fetches). Local paths are only for projects an instance admin registered, and only when
GOBUILD_ALLOW_LOCAL_REPOS is on. For everyone else an http(s) host must be on the public
internet: not loopback, link-local, private, shared (CGNAT), reserved or multicast, by name or
by any address its name resolves to, and not one of GoBuild's own host names. Credentials in a
URL (`https://user:token@host/...`) are split off to be kept encrypted; what is shown has `***`
in their place.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import PurePosixPath
from urllib.parse import urlsplit

from gobuild.platform.config import Settings

ALLOWED_SCHEMES = ("https", "http")
DEFAULT_PORTS = {"https": 443, "http": 80}
# Shown instead of the credentials of a repository URL.
REDACTED = "***"
# How long the host name of a repository URL may take to resolve.
RESOLVE_TIMEOUT_SECONDS = 5.0
# Names that mean this machine, besides `localhost` and its subdomains.
LOOPBACK_NAMES = frozenset({"localhost.localdomain", "ip6-localhost", "ip6-loopback"})

_CREDENTIALS = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)[^/@\s]*@")
_HOST_NAME = re.compile(r"^[a-z0-9_-]+(?:\.[a-z0-9_-]+)*$")
_NUMBER_LABEL = re.compile(r"^(?:[0-9]+|0[xX][0-9a-fA-F]*)$")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
# host, port -> the addresses the name resolves to (as text)
Resolver = Callable[[str, int], Awaitable[list[str]]]


class InvalidRepoUrl(ValueError):
    """A repository URL GoBuild will not clone."""


class RepoUrlRefused(InvalidRepoUrl):
    """A well-formed repository URL that this caller (or project) may not use."""


# --- Syntax -----------------------------------------------------------------------------------


def validate_repo_url(url: str) -> str:
    """Return the URL if it is a well-formed http(s) URL or an absolute local path; raise
    InvalidRepoUrl otherwise. Who may use which is `check_repo_source`'s to say."""
    url = url.strip()
    if not url:
        raise InvalidRepoUrl("repository URL is empty")
    if "::" in url.split("/", 1)[0]:
        helper = url.split("::", 1)[0]
        raise InvalidRepoUrl(f"unsupported repository URL scheme '{helper}::' (git remote helper)")
    if any(ch in url for ch in "\x00\n\r\t ") or url.startswith("-"):
        raise InvalidRepoUrl("repository URL contains whitespace or starts with '-'")
    if url.startswith("/"):
        if ".." in PurePosixPath(url).parts:
            raise InvalidRepoUrl("a local repository path may not contain '..'")
        return url
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme not in ALLOWED_SCHEMES:
        shown = f"'{scheme}://'" if scheme else "none"
        raise InvalidRepoUrl(
            f"unsupported repository URL scheme {shown}: use https://, http:// or an absolute path"
        )
    _parse_http(url)
    return url


@dataclass(frozen=True)
class _HttpUrl:
    host: str
    port: int
    # The host is an address, written in any of the forms URL parsers accept.
    address: IPAddress | None


def _parse_http(url: str) -> _HttpUrl:
    if "\\" in url:
        raise InvalidRepoUrl("repository URL contains a backslash")
    try:
        parts = urlsplit(url)
    except ValueError as exc:  # e.g. brackets around something that is not an IPv6 address
        raise InvalidRepoUrl(f"invalid repository URL: {exc}") from None
    if parts.netloc.count("@") > 1:
        raise InvalidRepoUrl("repository URL has more than one '@': percent-encode it (%40)")
    host = parts.hostname
    if not host:
        raise InvalidRepoUrl("repository URL has no host")
    try:
        port = parts.port or DEFAULT_PORTS[parts.scheme.lower()]
    except ValueError:
        raise InvalidRepoUrl("repository URL has an invalid port") from None
    if parts.netloc.rpartition("@")[2].startswith("["):
        try:
            return _HttpUrl(host, port, ipaddress.IPv6Address(host))
        except ValueError:
            raise InvalidRepoUrl(f"invalid IPv6 address {host!r} in repository URL") from None
    if not _HOST_NAME.match(host.removesuffix(".")):
        raise InvalidRepoUrl(
            f"invalid host name {host!r} in repository URL (use letters, digits, '-', '.'; "
            "international names in their xn-- form)"
        )
    return _HttpUrl(host, port, _ipv4_number(host))


def _ipv4_number(host: str) -> ipaddress.IPv4Address | None:
    """The IPv4 address a host means when its last label is a number, as URL parsers and
    `inet_aton` read it: `2130706433`, `0x7f.1` and `017700000001` all mean 127.0.0.1.
    None for a host name."""
    labels = host.split(".")
    if len(labels) > 1 and labels[-1] == "":
        labels.pop()
    if not _NUMBER_LABEL.match(labels[-1]):
        return None
    if len(labels) > 4:
        raise InvalidRepoUrl(f"invalid IPv4 address {host!r} in repository URL")
    numbers = [_ipv4_part(label, host) for label in labels]
    *leading, last = numbers
    if any(n > 255 for n in leading) or last >= 256 ** (5 - len(numbers)):
        raise InvalidRepoUrl(f"invalid IPv4 address {host!r} in repository URL")
    value = last + sum(n << (8 * (3 - i)) for i, n in enumerate(leading))
    return ipaddress.IPv4Address(value)


def _ipv4_part(label: str, host: str) -> int:
    try:
        if label[:2].lower() == "0x":
            return int(label[2:] or "0", 16)
        if len(label) > 1 and label.startswith("0"):
            return int(label[1:], 8)
        return int(label, 10)
    except ValueError:
        raise InvalidRepoUrl(f"invalid IPv4 address {host!r} in repository URL") from None


# --- Who may use what -------------------------------------------------------------------------


@dataclass(frozen=True)
class RepoSourcePolicy:
    """Which repositories one project may be built from."""

    # Registered by an instance admin: may use local paths and hosts on internal networks.
    trusted: bool = False
    # GOBUILD_ALLOW_LOCAL_REPOS: local paths are accepted at all (still only when trusted).
    local_repos_enabled: bool = False
    # GoBuild's own host names: refused, with their subdomains, unless trusted.
    own_domains: frozenset[str] = frozenset({"localhost"})

    @classmethod
    def for_settings(cls, settings: Settings, *, trusted: bool) -> RepoSourcePolicy:
        urls = (settings.gateway_public_url, settings.storage_url, settings.orchestrator_url)
        hosts = {urlsplit(url).hostname for url in urls}
        hosts |= {settings.deploy_domain.lower().strip("."), "localhost"}
        return cls(
            trusted=trusted,
            local_repos_enabled=settings.allow_local_repos,
            own_domains=frozenset(h.rstrip(".") for h in hosts if h),
        )

    @property
    def allows_local(self) -> bool:
        return self.trusted and self.local_repos_enabled

    @property
    def allows_internal_hosts(self) -> bool:
        return self.trusted


@dataclass(frozen=True)
class CheckedSource:
    """A repository URL the policy allowed, and what was checked."""

    url: str
    local_path: str | None = None
    host: str | None = None
    port: int | None = None
    # The addresses the host name resolved to when it was checked: the fetch must use these.
    addresses: tuple[str, ...] = ()

    def curl_resolve(self) -> str | None:
        """The `http.curloptResolve` entry (`host:port:address,...`) that makes git connect
        to the checked addresses only, so a second DNS answer cannot differ (rebinding)."""
        if not (self.host and self.port and self.addresses):
            return None
        shown = [f"[{a}]" if ":" in a else a for a in self.addresses]
        return f"{self.host}:{self.port}:{','.join(shown)}"


def is_internal_address(address: IPAddress) -> bool:
    """Whether an address is not on the public internet: loopback, link-local (cloud metadata
    169.254.169.254), private (RFC 1918, ULA fc00::/7), shared (CGNAT 100.64/10), unspecified,
    reserved, multicast, site-local, or an IPv6 form of an IPv4 address (mapped, compatible,
    NAT64) or one embedding an internal one (6to4, Teredo)."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = address.sixtofour or (address.teredo[1] if address.teredo else None)
        if address.ipv4_mapped is not None or address.is_site_local:
            return True
        if embedded is not None and is_internal_address(embedded):
            return True
    return (
        not address.is_global
        or address.is_multicast
        or address.is_reserved
        or address.is_private
        or address.is_link_local
        or address.is_loopback
        or address.is_unspecified
    )


async def resolve_host(host: str, port: int) -> list[str]:
    """Every address `host` resolves to (IPv4 and IPv6), within RESOLVE_TIMEOUT_SECONDS."""
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(RESOLVE_TIMEOUT_SECONDS):
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def _parse_address(text: str) -> IPAddress:
    return ipaddress.ip_address(text.split("%", 1)[0])  # without an IPv6 zone (`%eth0`)


async def check_repo_source(
    url: str,
    policy: RepoSourcePolicy,
    *,
    must_resolve: bool,
    resolve: Resolver = resolve_host,
) -> CheckedSource:
    """The URL if `policy` allows it, with the addresses its host resolved to; else raise
    InvalidRepoUrl (RepoUrlRefused when it is well-formed but not allowed).

    A host name that does not resolve is refused when `must_resolve` (the builder, about to
    fetch); otherwise (the gateway, registering a project) it is let through unchecked, since
    the builder checks it again right before every fetch.
    """
    url = validate_repo_url(url)
    if url.startswith("/"):
        if not policy.allows_local:
            raise RepoUrlRefused(_local_refusal(policy))
        return CheckedSource(url=url, local_path=url)
    parsed = _parse_http(url)
    if policy.allows_internal_hosts:
        return CheckedSource(url=url, host=parsed.host, port=parsed.port)
    if parsed.host.endswith("."):
        raise RepoUrlRefused(f"remove the trailing dot from the host name {parsed.host!r}")
    if parsed.address is None and _is_own_host(parsed.host, policy.own_domains):
        raise RepoUrlRefused(
            f"{parsed.host!r} is this machine or one of GoBuild's own host names; "
            "give the repository's public URL"
        )
    if parsed.address is not None:
        addresses = [parsed.address]
    else:
        try:
            resolved = await resolve(parsed.host, parsed.port)
        except (OSError, TimeoutError) as exc:
            if must_resolve:
                why = "timed out" if isinstance(exc, TimeoutError) else str(exc)
                raise RepoUrlRefused(f"cannot resolve {parsed.host!r}: {why}") from None
            return CheckedSource(url=url, host=parsed.host, port=parsed.port)
        addresses = [_parse_address(a) for a in resolved]
        if not addresses:
            raise RepoUrlRefused(f"{parsed.host!r} resolves to no address")
    internal = [a for a in addresses if is_internal_address(a)]
    if internal:
        via = "" if parsed.address is not None else f"{parsed.host!r} resolves to "
        raise RepoUrlRefused(
            f"{via}{internal[0]}, an address on a loopback, link-local, private or reserved "
            "network: only instance admins may register repositories on internal networks"
        )
    return CheckedSource(
        url=url,
        host=parsed.host,
        port=parsed.port,
        addresses=() if parsed.address is not None else tuple(str(a) for a in addresses),
    )


def _is_own_host(host: str, own_domains: Iterable[str]) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    return any(host == domain or host.endswith("." + domain) for domain in own_domains)


def _local_refusal(policy: RepoSourcePolicy) -> str:
    if policy.trusted:
        return (
            "local repository paths are turned off on this instance; set "
            "GOBUILD_ALLOW_LOCAL_REPOS=true to let instance admins register them"
        )
    return (
        "local repository paths are only accepted from instance admins (and only when "
        "GOBUILD_ALLOW_LOCAL_REPOS=true); give the repository's https:// URL"
    )


# --- Credentials ------------------------------------------------------------------------------


def redact_url(text: str) -> str:
    """Replace `user:token@` with `***@` in every URL in `text`."""
    return _CREDENTIALS.sub(rf"\g<scheme>{REDACTED}@", text)


def _authority_span(url: str) -> tuple[int, int] | None:
    if "://" not in url:
        return None
    start = url.index("://") + 3
    end = min((i for i in (url.find(c, start) for c in "/?#") if i >= 0), default=len(url))
    return start, end


def split_credentials(url: str) -> tuple[str, str | None]:
    """`https://user:token@host/x` → (`https://***@host/x`, `user:token`); a URL without
    credentials (or a path) comes back unchanged, with None."""
    span = _authority_span(url)
    if span is None:
        return url, None
    start, end = span
    userinfo, at, host = url[start:end].rpartition("@")
    if not at:
        return url, None
    if not userinfo:
        return url[:start] + host + url[end:], None
    return f"{url[:start]}{REDACTED}@{host}{url[end:]}", userinfo


def with_credentials(url: str, userinfo: str) -> str:
    """The URL with `userinfo` (`user:token`) in place of whatever credentials it shows."""
    span = _authority_span(url)
    if span is None:
        raise InvalidRepoUrl("only an http(s) URL can carry credentials")
    start, end = span
    host = url[start:end].rpartition("@")[2]
    return f"{url[:start]}{userinfo}@{host}{url[end:]}"


# --- Webhook matching -------------------------------------------------------------------------


def repo_keys(url: str) -> set[str]:
    """Keys under which a repository URL is indexed: `host/owner/name` and `owner/name`.

    `https://github.com/Octo/App.git`, `git@github.com:octo/app` and `github.com/octo/app`
    give `github.com/octo/app` (and `octo/app`); a local path gives its path.
    """
    url = url.strip()
    if not url:
        return set()
    host = ""
    if "://" in url:
        parts = urlsplit(url)
        host, path = (parts.hostname or "").lower(), parts.path
    elif re.match(r"^[\w.-]+@[\w.-]+:", url):  # scp-like: git@host:owner/name.git
        userhost, path = url.split(":", 1)
        host = userhost.split("@", 1)[1].lower()
    else:
        path = url
    path = path.strip("/").removesuffix(".git").lower()
    if not path:
        return set()
    keys = {f"{host}/{path}" if host else path}
    if host and path.count("/") >= 1:
        keys.add(path)
    return keys


# --- Other outgoing requests ------------------------------------------------------------------


class InternalAddressRefused(InvalidRepoUrl):
    """An outgoing URL (a project's webhook, its forge URL) whose host is this machine or on an
    internal network."""


async def check_public_url(
    url: str, *, must_resolve: bool, resolve: Resolver = resolve_host
) -> CheckedSource:
    """The http(s) URL with the addresses its host resolves to, if none of them is internal
    (`is_internal_address`) and the host is no name of this machine; else raise
    InternalAddressRefused (InvalidRepoUrl for a malformed URL).

    The same check as for repository URLs, for the other URLs GoBuild sends requests to. A
    name that does not resolve is let through, unless `must_resolve` (right before a request,
    which then goes to the checked addresses only): then the OSError or TimeoutError is raised.
    """
    if "://" not in url or url.split("://", 1)[0].lower() not in ALLOWED_SCHEMES:
        raise InvalidRepoUrl("use an https:// or http:// URL")
    parsed = _parse_http(url)
    if parsed.host.endswith("."):
        raise InternalAddressRefused(f"remove the trailing dot from the host name {parsed.host!r}")
    if parsed.address is None and _is_own_host(parsed.host, {"localhost"}):
        raise InternalAddressRefused(f"{parsed.host!r} is this machine")
    if parsed.address is not None:
        addresses = [parsed.address]
    else:
        try:
            addresses = [_parse_address(a) for a in await resolve(parsed.host, parsed.port)]
        except (OSError, TimeoutError):
            if must_resolve:
                raise
            return CheckedSource(url=url, host=parsed.host, port=parsed.port)
        if not addresses:
            raise InternalAddressRefused(f"{parsed.host!r} resolves to no address")
    internal = [a for a in addresses if is_internal_address(a)]
    if internal:
        via = "" if parsed.address is not None else f"{parsed.host!r} resolves to "
        raise InternalAddressRefused(
            f"{via}{internal[0]}, an address on a loopback, link-local, private or reserved "
            "network (an instance admin may allow them: GOBUILD_HOOKS_ALLOW_PRIVATE_ADDRESSES)"
        )
    return CheckedSource(
        url=url, host=parsed.host, port=parsed.port, addresses=tuple(str(a) for a in addresses)
    )
