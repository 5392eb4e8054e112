"""Which repository URLs GoBuild clones, and how webhook payloads find their project."""

from __future__ import annotations

import ipaddress
import socket

import pytest

from gobuild.platform.config import Settings
from gobuild.platform.repo_url import (
    InvalidRepoUrl,
    RepoSourcePolicy,
    RepoUrlRefused,
    Resolver,
    check_repo_source,
    is_internal_address,
    redact_url,
    repo_keys,
    resolve_host,
    split_credentials,
    validate_repo_url,
    with_credentials,
)


@pytest.mark.parametrize(
    "url", ["https://github.com/octo/app.git", "http://gitlab.local/g/app", "/srv/git/app.git"]
)
def test_http_and_local_paths_are_accepted(url: str) -> None:
    assert validate_repo_url(url) == url


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ftp://example.com/app.git", "'ftp://'"),
        ("ext::sh -c touch% /tmp/pwned", "'ext::'"),
        ("ssh://git@example.com/app.git", "'ssh://'"),
        ("file:///srv/app.git", "'file://'"),
        ("git@github.com:octo/app.git", "scheme none"),
        ("--upload-pack=evil", "starts with '-'"),
        ("/srv/../etc/app", "'..'"),
        ("", "empty"),
    ],
)
def test_other_schemes_are_refused_with_a_clear_message(url: str, message: str) -> None:
    with pytest.raises(InvalidRepoUrl, match=message):
        validate_repo_url(url)


def test_one_repository_gives_the_same_keys_whatever_url_form_names_it() -> None:
    expected = {"github.com/octo/app", "octo/app"}
    assert repo_keys("https://github.com/Octo/App.git") == expected
    assert repo_keys("git@github.com:octo/app.git") == expected
    assert "octo/app" in repo_keys("Octo/App")
    assert repo_keys("/srv/git/site.git") == {"srv/git/site"}


# --- Who may use which repository -------------------------------------------------------------

PUBLIC = RepoSourcePolicy()
ADMIN = RepoSourcePolicy(trusted=True)
ADMIN_WITH_LOCAL_REPOS = RepoSourcePolicy(trusted=True, local_repos_enabled=True)


def resolving_to(*addresses: str) -> Resolver:
    async def resolve(host: str, port: int) -> list[str]:
        return list(addresses)

    return resolve


async def not_resolving(host: str, port: int) -> list[str]:
    raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")


@pytest.mark.parametrize("path", ["/srv/git/other-tenant.git", "/etc", "/"])
async def test_local_paths_are_only_for_admins_and_only_with_local_repos_on(path: str) -> None:
    with pytest.raises(RepoUrlRefused, match="only accepted from instance admins"):
        await check_repo_source(path, PUBLIC, must_resolve=True)
    with pytest.raises(RepoUrlRefused, match="GOBUILD_ALLOW_LOCAL_REPOS=true"):
        await check_repo_source(path, ADMIN, must_resolve=True)

    checked = await check_repo_source(path, ADMIN_WITH_LOCAL_REPOS, must_resolve=True)

    assert checked.local_path == path


@pytest.mark.parametrize(
    ("url", "address"),
    [
        ("http://127.0.0.1:8080/x.git", "127.0.0.1"),
        ("http://169.254.169.254/latest/meta-data", "169.254.169.254"),
        ("http://[::1]/x.git", "::1"),
        ("http://0.0.0.0/x.git", "0.0.0.0"),
        ("http://[::]/x.git", "::"),
        ("http://10.1.2.3/x.git", "10.1.2.3"),
        ("http://172.16.0.1/x.git", "172.16.0.1"),
        ("https://192.168.1.1/x.git", "192.168.1.1"),
        ("http://100.64.0.1/x.git", "100.64.0.1"),
        ("http://[fd00::1]/x.git", "fd00::1"),
        ("http://[fe80::1]/x.git", "fe80::1"),
        ("http://[::ffff:127.0.0.1]/x.git", "::ffff:7f00:1"),
        ("http://[::ffff:8.8.8.8]/x.git", "::ffff:808:808"),
        ("http://[2002:7f00:1::]/x.git", "2002:7f00:1::"),
        ("http://224.0.0.1/x.git", "224.0.0.1"),
        # Decimal, hexadecimal and octal spellings of 127.0.0.1, as curl and inet_aton read them.
        ("http://2130706433/x.git", "127.0.0.1"),
        ("http://0x7f.1/x.git", "127.0.0.1"),
        ("http://0x7f000001/x.git", "127.0.0.1"),
        ("http://017700000001/x.git", "127.0.0.1"),
        ("http://127.1/x.git", "127.0.0.1"),
        ("http://0177.0.0.01/x.git", "127.0.0.1"),
        ("http://user:token@127.0.0.1/x.git", "127.0.0.1"),
    ],
)
async def test_addresses_on_internal_networks_are_refused_for_non_admins(
    url: str, address: str
) -> None:
    with pytest.raises(RepoUrlRefused, match="only instance admins") as refused:
        await check_repo_source(url, PUBLIC, must_resolve=False)

    assert str(refused.value).startswith(address)
    assert "token" not in str(refused.value)
    assert (await check_repo_source(url, ADMIN, must_resolve=True)).url == url


@pytest.mark.parametrize(
    "url",
    [
        "http://0x100000000/x.git",
        "http://1.2.3.4.5/x.git",
        "http://256.1.1.1/x.git",
        "http://1.1.1.08/x.git",
        "http://a@127.0.0.1@github.com/x.git",
        "http://127.0.0.1\\@github.com/x.git",
        "http://%31%32%37.0.0.1/x.git",
        "http://[not-an-address]/x.git",
    ],
)
def test_ambiguous_hosts_are_refused_for_everyone(url: str) -> None:
    with pytest.raises(InvalidRepoUrl):
        validate_repo_url(url)


async def test_host_names_are_refused_if_any_address_they_resolve_to_is_internal() -> None:
    resolver = resolving_to("93.184.215.14", "10.0.0.5")

    with pytest.raises(RepoUrlRefused, match=r"'git\.example\.com' resolves to 10\.0\.0\.5"):
        await check_repo_source(
            "https://git.example.com/r.git", PUBLIC, must_resolve=True, resolve=resolver
        )


async def test_a_public_host_is_pinned_to_the_addresses_that_were_checked() -> None:
    resolver = resolving_to("93.184.215.14", "2606:2800:21f:cb07:6820:80da:af6b:8b2c")

    checked = await check_repo_source(
        "https://git.example.com/r.git", PUBLIC, must_resolve=True, resolve=resolver
    )

    assert checked.curl_resolve() == (
        "git.example.com:443:93.184.215.14,[2606:2800:21f:cb07:6820:80da:af6b:8b2c]"
    )


async def test_a_host_that_does_not_resolve_is_refused_only_where_it_must_resolve() -> None:
    url = "https://git.example.com/r.git"

    unchecked = await check_repo_source(url, PUBLIC, must_resolve=False, resolve=not_resolving)
    assert unchecked.addresses == ()
    with pytest.raises(RepoUrlRefused, match=r"cannot resolve 'git\.example\.com'"):
        await check_repo_source(url, PUBLIC, must_resolve=True, resolve=not_resolving)


async def test_the_real_resolver_finds_this_machine() -> None:
    assert "127.0.0.1" in await resolve_host("localhost", 80)


@pytest.mark.parametrize(
    "url",
    [
        "http://localhost:8080/x.git",
        "http://LOCALHOST/x.git",
        "http://api.localhost/x.git",
        "http://ip6-localhost/x.git",
        "https://gobuild.example.com/x.git",
        "https://example.app/x.git",
        "https://my-site.example.app/x.git",
        "http://localhost./x.git",
    ],
)
async def test_gobuilds_own_host_names_are_refused_for_non_admins(url: str) -> None:
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        public_url="https://gobuild.example.com",
        deploy_domain="example.app",
    )
    policy = RepoSourcePolicy.for_settings(settings, trusted=False)

    with pytest.raises(RepoUrlRefused):
        await check_repo_source(url, policy, must_resolve=False, resolve=resolving_to("8.8.8.8"))


def test_the_policy_follows_the_setting_and_the_trust() -> None:
    on = Settings(_env_file=None, allow_local_repos=True)  # type: ignore[call-arg]
    off = Settings(_env_file=None, allow_local_repos=False)  # type: ignore[call-arg]

    assert RepoSourcePolicy.for_settings(on, trusted=True).allows_local
    assert not RepoSourcePolicy.for_settings(on, trusted=False).allows_local
    assert not RepoSourcePolicy.for_settings(off, trusted=True).allows_local
    assert RepoSourcePolicy.for_settings(off, trusted=True).allows_internal_hosts
    assert not RepoSourcePolicy.for_settings(on, trusted=False).allows_internal_hosts


@pytest.mark.parametrize(
    ("address", "internal"),
    [
        ("8.8.8.8", False),
        ("2606:4700:4700::1111", False),
        ("127.0.0.53", True),
        ("169.254.169.254", True),
        ("fd00:ec2::254", True),
        ("fec0::1", True),
        ("64:ff9b::7f00:1", True),
        ("2001:0:4136:e378:8000:63bf:80ff:fffe", True),  # Teredo around 127.0.0.1
        ("255.255.255.255", True),
        ("ff02::1", True),
    ],
)
def test_internal_addresses(address: str, internal: bool) -> None:
    assert is_internal_address(ipaddress.ip_address(address)) is internal


# --- Credentials ------------------------------------------------------------------------------


def test_credentials_are_split_off_the_url_and_put_back_for_the_fetch() -> None:
    shown, userinfo = split_credentials("https://x-token:s3cr%40t@github.com/o/r.git?a#b")

    assert shown == "https://***@github.com/o/r.git?a#b"
    assert userinfo == "x-token:s3cr%40t"
    assert with_credentials(shown, userinfo) == "https://x-token:s3cr%40t@github.com/o/r.git?a#b"
    assert split_credentials("https://github.com/o/r.git") == ("https://github.com/o/r.git", None)
    assert split_credentials("/srv/git/r.git") == ("/srv/git/r.git", None)
    assert (
        redact_url("fatal: https://u:p@h/x and http://v@h")
        == "fatal: https://***@h/x and http://***@h"
    )
