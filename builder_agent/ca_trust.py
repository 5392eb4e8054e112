"""Extra certificate authorities for build and clone containers (GOBUILD_BUILD_CA_BUNDLE).

The builder writes two files once at start, under its data folder (which is at the same path
for the Docker engine, as the workspaces are): the host's system bundle plus the extra PEM, and
the extra PEM alone. Every container gets both read-only, with the variables OpenSSL (Python),
curl, pip, requests, git and node read pointing at them. The image's own system bundle
cannot be read from the host without running the image, so the host's stands in for it.
A repository's Dockerfile gets the same files and variables in its RUN instructions
(`layer_cache.trusting_dockerfile`).
"""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from gobuild.platform.config import HOST_CA_BUNDLE, Settings

# Where the files are mounted in a container.
BUNDLE_IN_CONTAINER = "/etc/gobuild/ca/ca-bundle.crt"
EXTRA_IN_CONTAINER = "/etc/gobuild/ca/extra-ca.crt"
# The folder of the data directory the files are written to.
CA_FOLDER = "build-ca"
_PEM_CERTIFICATE = re.compile(
    rb"-----BEGIN CERTIFICATE-----\r?\n.+?\r?\n-----END CERTIFICATE-----", re.DOTALL
)


class CaBundleError(RuntimeError):
    """GOBUILD_BUILD_CA_BUNDLE cannot be used; the message says why."""


@dataclass(frozen=True)
class BuildCaTrust:
    """What a container needs to trust the extra CAs: its mounts and its variables."""

    # Host path -> path in the container (mounted read-only).
    mounts: Mapping[str, str] = field(default_factory=dict)
    env: Mapping[str, str] = field(default_factory=dict)
    # How many certificates the extra bundle holds (0: no extra trust).
    extra_certificates: int = 0


NO_EXTRA_TRUST = BuildCaTrust()


def _certificates(data: bytes) -> list[bytes]:
    return [match.replace(b"\r\n", b"\n") for match in _PEM_CERTIFICATE.findall(data)]


def _unique(certificates: Iterable[bytes]) -> list[bytes]:
    return list(dict.fromkeys(certificates))


def _write_atomically(path: Path, data: bytes) -> None:
    """Replace `path` whole (a container starting meanwhile sees the old file or the new)."""
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    temporary.write_bytes(data)
    # Containers read it as the build user, not as the builder's user.
    temporary.chmod(0o644)
    os.replace(temporary, path)


def prepare_ca_trust(settings: Settings, system_bundle: Path = HOST_CA_BUNDLE) -> BuildCaTrust:
    """The trust every container gets (blocking file work, once at start); no extra trust when
    GOBUILD_BUILD_CA_BUNDLE is unset. CaBundleError when it is unreadable or holds no
    certificate."""
    source = settings.build_ca_bundle
    if source is None:
        return NO_EXTRA_TRUST
    try:
        extra = _unique(_certificates(source.read_bytes()))
    except OSError as exc:
        raise CaBundleError(f"GOBUILD_BUILD_CA_BUNDLE {source} cannot be read: {exc}") from None
    if not extra:
        raise CaBundleError(
            f"GOBUILD_BUILD_CA_BUNDLE {source} holds no PEM certificate "
            "('-----BEGIN CERTIFICATE-----')"
        )
    system = _certificates(system_bundle.read_bytes()) if system_bundle.is_file() else []
    folder = settings.data_dir / CA_FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    bundle, extra_file = folder / "ca-bundle.crt", folder / "extra-ca.crt"
    _write_atomically(bundle, b"\n".join(_unique([*system, *extra])) + b"\n")
    _write_atomically(extra_file, b"\n".join(extra) + b"\n")
    return BuildCaTrust(
        mounts={str(bundle): BUNDLE_IN_CONTAINER, str(extra_file): EXTRA_IN_CONTAINER},
        env={
            "SSL_CERT_FILE": BUNDLE_IN_CONTAINER,
            "PIP_CERT": BUNDLE_IN_CONTAINER,
            "REQUESTS_CA_BUNDLE": BUNDLE_IN_CONTAINER,
            "GIT_SSL_CAINFO": BUNDLE_IN_CONTAINER,
            "CURL_CA_BUNDLE": BUNDLE_IN_CONTAINER,
            # Node adds these to its own built-in list (it reads no system bundle).
            "NODE_EXTRA_CA_CERTS": EXTRA_IN_CONTAINER,
        },
        extra_certificates=len(extra),
    )
