"""Extra CA trust (GOBUILD_BUILD_CA_BUNDLE): a build container reaches an HTTPS server whose
certificate a test CA signed only when the bundle is set."""

from __future__ import annotations

import contextlib
import datetime
import functools
import http.server
import ipaddress
import ssl
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import docker
import docker.errors
import pytest
import redis.asyncio as aioredis
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from gobuild.builder_agent.ca_trust import (
    BUNDLE_IN_CONTAINER,
    CaBundleError,
    prepare_ca_trust,
)
from gobuild.builder_agent.checkout import CheckoutError, CloneContainer, GitRemote, checkout
from gobuild.builder_agent.container import (
    LABEL_BUILD_ID,
    StepSpec,
    ensure_build_network,
    hand_workspace_to,
    run_step,
)
from gobuild.builder_agent.layer_cache import (
    CA_TRUST_REPOSITORY,
    LABEL_LAYER_PROJECT,
    LayerCache,
    LayerCacheError,
)
from gobuild.platform.config import Settings
from gobuild.platform.devstack import free_port
from gobuild.platform.stores.caches import CacheIndex
from tests.builder_agent.test_layer_cache import make_run
from tests.conftest import BUILD_IMAGE, GitRepo, git

BUILD_NETWORK = "gobuild-builds"


@dataclass(frozen=True)
class IssuedByTestCa:
    ca_pem: bytes
    cert_pem: bytes
    key_pem: bytes


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def make_test_ca(server_ip: str) -> IssuedByTestCa:
    """A CA of this test only, and a certificate it signed for `server_ip`."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(_name("GoBuild test CA"))
        .issuer_name(_name("GoBuild test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(server_ip))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(server_ip))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    return IssuedByTestCa(
        ca_pem=ca_cert.public_bytes(serialization.Encoding.PEM),
        cert_pem=cert.public_bytes(serialization.Encoding.PEM),
        key_pem=key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )


class _QuietFiles(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
async def build_network_gateway(docker_client: docker.DockerClient) -> str:
    """The address at which containers on the build network reach this host."""
    await ensure_build_network(docker_client, BUILD_NETWORK)
    network = docker_client.networks.get(BUILD_NETWORK)
    return str(network.attrs["IPAM"]["Config"][0]["Gateway"])


@pytest.fixture
def https_server(
    build_network_gateway: str, tmp_path: Path, git_repo: GitRepo
) -> Iterator[tuple[IssuedByTestCa, str]]:
    """An HTTPS server on this host with a certificate of a test CA, serving a page and the
    bare repository `site.git` (git's dumb HTTP protocol); (the CA, its URL)."""
    ca = make_test_ca(build_network_gateway)
    www = tmp_path / "www"
    www.mkdir()
    (www / "index.html").write_text("hello over test TLS\n")
    git_repo.commit({"index.html": "served"}, "first")
    git(git_repo.bare, "update-server-info")
    (www / "site.git").symlink_to(git_repo.bare)
    (tmp_path / "server.crt").write_bytes(ca.cert_pem)
    (tmp_path / "server.key").write_bytes(ca.key_pem)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tmp_path / "server.crt", tmp_path / "server.key")
    port = free_port()
    server = http.server.ThreadingHTTPServer(
        ("0.0.0.0", port), functools.partial(_QuietFiles, directory=str(www))
    )
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield ca, f"https://{build_network_gateway}:{port}/"
    server.shutdown()
    server.server_close()


async def _fetch_in_build_container(
    docker_client: docker.DockerClient, workspace: Path, url: str, settings: Settings
) -> tuple[int | None, list[str]]:
    trust = prepare_ca_trust(settings)
    lines: list[str] = []

    async def collect(stream: str, line: str) -> None:
        lines.append(line)

    result = await run_step(
        docker_client,
        StepSpec(
            image=BUILD_IMAGE,
            command=(
                'python3 -c "import urllib.request, sys; '
                f"print(urllib.request.urlopen('{url}', timeout=10).read().decode())\""
            ),
            workspace=workspace,
            env=dict(trust.env),
            memory_mb=256,
            network=BUILD_NETWORK,
            labels={LABEL_BUILD_ID: f"b_ca{uuid.uuid4().hex[:12]}"},
            read_only_mounts=trust.mounts,
        ),
        on_line=collect,
    )
    return result.exit_code, lines


@pytest.fixture
async def workspace(tmp_path: Path) -> Path:
    folder = tmp_path / "ws"
    folder.mkdir()
    await hand_workspace_to(folder, "1000:1000")
    return folder


async def test_build_with_the_ca_bundle_reaches_a_server_the_test_ca_signed_and_fails_without(
    docker_client: docker.DockerClient,
    https_server: tuple[IssuedByTestCa, str],
    workspace: Path,
    tmp_path: Path,
    make_settings: Callable[..., Settings],
) -> None:
    ca, url = https_server
    bundle = tmp_path / "extra-ca.pem"
    bundle.write_bytes(ca.ca_pem)

    code, lines = await _fetch_in_build_container(
        docker_client, workspace, url, make_settings(build_ca_bundle=bundle)
    )
    assert code == 0, lines
    assert "hello over test TLS" in lines

    code, lines = await _fetch_in_build_container(
        docker_client, workspace, url, make_settings(build_ca_bundle=None)
    )
    assert code != 0
    assert any("CERTIFICATE_VERIFY_FAILED" in line for line in lines), lines


async def test_the_clone_container_fetches_over_https_with_the_ca_bundle_and_fails_without(
    docker_client: docker.DockerClient,
    https_server: tuple[IssuedByTestCa, str],
    git_repo: GitRepo,
    tmp_path: Path,
    make_settings: Callable[..., Settings],
) -> None:
    ca, url = https_server
    bundle = tmp_path / "extra-ca.pem"
    bundle.write_bytes(ca.ca_pem)
    sha = git(git_repo.work, "rev-parse", "HEAD")

    def remote(settings: Settings) -> GitRemote:
        container = CloneContainer(
            client=docker_client,
            image=BUILD_IMAGE,
            network=BUILD_NETWORK,
            memory_mb=256,
            labels={LABEL_BUILD_ID: f"b_ca{uuid.uuid4().hex[:12]}"},
            ca_trust=prepare_ca_trust(settings),
        )
        return GitRemote(shown=url, container=container, fetch_url=f"{url}site.git")

    trusted = remote(make_settings(build_ca_bundle=bundle))
    checked_out = await checkout(
        trusted, tmp_path / "ws1", commit_sha=sha, ref=None, branch="main", timeout=60
    )
    assert checked_out == sha
    assert (tmp_path / "ws1" / "index.html").read_text() == "served"

    with pytest.raises(CheckoutError, match="certificate"):
        await checkout(
            remote(make_settings(build_ca_bundle=None)),
            tmp_path / "ws2",
            commit_sha=sha,
            ref=None,
            branch="main",
            timeout=60,
        )


def test_the_bundle_is_the_system_one_plus_the_extra_certificates_once(
    tmp_path: Path, make_settings: Callable[..., Settings]
) -> None:
    first, second = make_test_ca("10.0.0.1"), make_test_ca("10.0.0.2")
    system = tmp_path / "system.crt"
    system.write_bytes(first.ca_pem)
    extra = tmp_path / "extra.pem"
    extra.write_bytes(b"comment\n" + first.ca_pem + second.ca_pem + second.ca_pem)

    trust = prepare_ca_trust(make_settings(build_ca_bundle=extra), system_bundle=system)

    assert trust.extra_certificates == 2
    assert trust.env["SSL_CERT_FILE"] == BUNDLE_IN_CONTAINER
    assert trust.env["GIT_SSL_CAINFO"] == BUNDLE_IN_CONTAINER
    files = {inside: Path(host).read_bytes() for host, inside in trust.mounts.items()}
    combined = files[BUNDLE_IN_CONTAINER]
    assert combined.count(b"BEGIN CERTIFICATE") == 2
    assert first.ca_pem in combined and second.ca_pem in combined
    assert files[trust.env["NODE_EXTRA_CA_CERTS"]].count(b"BEGIN CERTIFICATE") == 2


def test_a_bundle_without_certificates_is_refused_and_none_means_no_extra_trust(
    tmp_path: Path, make_settings: Callable[..., Settings]
) -> None:
    empty = tmp_path / "empty.pem"
    empty.write_text("not a certificate\n")
    with pytest.raises(CaBundleError, match="no PEM certificate"):
        prepare_ca_trust(make_settings(build_ca_bundle=empty))
    with pytest.raises(CaBundleError, match="cannot be read"):
        prepare_ca_trust(make_settings(build_ca_bundle=tmp_path / "missing.pem"))
    trust = prepare_ca_trust(make_settings(build_ca_bundle=None))
    assert not trust.mounts and not trust.env


PYTHON_FETCH = "import urllib.request; print(urllib.request.urlopen('{url}').read().decode())"
NODE_FETCH = (
    "require('https').get('{url}', r => r.pipe(process.stdout))"
    ".on('error', e => {{ console.error(e.message); process.exit(1); }})"
)
FETCH_IN_DOCKERFILE = f"""\
FROM {{image}}
RUN python3 -c "{PYTHON_FETCH}" > /opt/by-python.txt
RUN node -e "{NODE_FETCH}" > /opt/by-node.txt
"""


async def test_a_dockerfiles_run_instructions_trust_the_ca_bundle_without_it_staying_in_the_image(
    docker_client: docker.DockerClient,
    https_server: tuple[IssuedByTestCa, str],
    redis: aioredis.Redis,
    tmp_path: Path,
    make_settings: Callable[..., Settings],
) -> None:
    """`RUN pip install`/`npm ci` in a repository's Dockerfile reach the registry through a
    TLS-inspecting proxy: RUN gets the trust steps get, and the image keeps no variable of it."""
    ca, url = https_server
    bundle = tmp_path / "extra-ca.pem"
    bundle.write_bytes(ca.ca_pem)
    source = tmp_path / "workspace"
    source.mkdir()
    (source / "Dockerfile").write_text(FETCH_IN_DOCKERFILE.format(image=BUILD_IMAGE, url=url))
    project_id = f"p_ca{uuid.uuid4().hex[:8]}"
    ca_images_before = {image.id for image in docker_client.images.list(CA_TRUST_REPOSITORY)}

    def layers(settings: Settings) -> LayerCache:
        return LayerCache(settings, docker_client, CacheIndex(redis), prepare_ca_trust(settings))

    try:
        trusted = await layers(
            make_settings(build_ca_bundle=bundle, build_network=BUILD_NETWORK)
        ).image_for(make_run(tmp_path, project_id, 1), source, "Dockerfile", 256)
        for fetched in ("/opt/by-python.txt", "/opt/by-node.txt"):
            output = docker_client.containers.run(trusted.image_id, f"cat {fetched}", remove=True)
            assert output.strip() == b"hello over test TLS"
        env = docker_client.images.get(trusted.image_id).attrs["Config"]["Env"] or []
        assert not [item for item in env if item.startswith(("SSL_CERT_FILE=", "NODE_EXTRA"))]

        untrusted = make_run(tmp_path, project_id, 2)
        with pytest.raises(LayerCacheError, match="returned a non-zero code"):
            await layers(
                make_settings(build_ca_bundle=None, build_network=BUILD_NETWORK)
            ).image_for(untrusted, source, "Dockerfile", 256)
        lines = untrusted.logs.lines  # type: ignore[attr-defined]
        assert any("CERTIFICATE_VERIFY_FAILED" in line for line in lines), lines
    finally:
        labelled = {"label": f"{LABEL_LAYER_PROJECT}={project_id}"}
        for image in docker_client.images.list(filters=labelled):
            with contextlib.suppress(docker.errors.APIError):
                docker_client.images.remove(image.id, force=True)
        for image in docker_client.images.list(CA_TRUST_REPOSITORY):
            if image.id not in ca_images_before:  # the test CA's
                with contextlib.suppress(docker.errors.APIError):
                    docker_client.images.remove(image.id, force=True)
