"""The layer cache on the real Docker engine: a repository's Dockerfile is built once per
content, reused by the project's next builds, rebuilt once its cache is cleared, and its
stale images removed."""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import docker
import docker.errors
import pytest
import redis.asyncio as aioredis

from gobuild.builder_agent.build_run import BuildRun
from gobuild.builder_agent.ca_trust import BuildCaTrust
from gobuild.builder_agent.container import image_source
from gobuild.builder_agent.layer_cache import (
    LABEL_LAYER_PROJECT,
    LAYER_REPOSITORY,
    LayerCache,
    LayerCacheError,
    base_images,
    trusting_dockerfile,
)
from gobuild.platform.config import Settings
from gobuild.platform.events import BuildConfig, BuildRequested
from gobuild.platform.stores.caches import CacheIndex
from tests.conftest import BUILD_IMAGE


@dataclass
class RecordedLog:
    lines: list[str] = field(default_factory=list)

    async def system(self, line: str) -> None:
        self.lines.append(line)

    async def write(self, stream: str, line: str) -> None:
        self.lines.append(line)


def make_run(tmp_path: Path, project_id: str, number: int) -> BuildRun:
    request = BuildRequested(
        build_id=f"b_layer{number}",
        project_id=project_id,
        project_name="site",
        number=number,
        source="api",
        repo_url="https://example.com/site.git",
        ref="refs/heads/main",
        branch="main",
        commit_sha="a" * 40,
        production=True,
        config=BuildConfig(
            image=BUILD_IMAGE, timeout_seconds=60, memory_mb=256, cpus=1, pids_limit=64
        ),
    )
    return BuildRun(
        request=request,
        attempt=1,
        logs=RecordedLog(),  # type: ignore[arg-type]
        workspace=tmp_path / "workspace",
        archive=tmp_path / f"b_layer{number}-1.tar.gz",
        started=0.0,
        deadline=1e12,
        timeout_seconds=60,
    )


@pytest.fixture
def project_id(docker_client: docker.DockerClient) -> Iterator[str]:
    """A project of its own; its layer images are removed afterwards."""
    project = f"p_layer{secrets.token_hex(4)}"
    yield project
    for image in docker_client.images.list(filters={"label": f"{LABEL_LAYER_PROJECT}={project}"}):
        with contextlib.suppress(docker.errors.APIError):
            docker_client.images.remove(image.id, force=True)


async def test_a_dockerfile_is_built_once_reused_and_rebuilt_after_its_cache_is_cleared(
    make_settings: Callable[..., Settings],
    redis: aioredis.Redis,
    docker_client: docker.DockerClient,
    project_id: str,
    tmp_path: Path,
) -> None:
    source = tmp_path / "workspace"
    (source / "ci").mkdir(parents=True)
    (source / "ci" / "tool.sh").write_text("echo tool\n")
    (source / "ci" / "build.Dockerfile").write_text(
        f"FROM {BUILD_IMAGE}\nCOPY tool.sh /opt/tool.sh\nRUN echo built > /opt/layer-marker\n"
    )
    index = CacheIndex(redis)
    layers = LayerCache(make_settings(build_network="bridge"), docker_client, index)

    first_run = make_run(tmp_path, project_id, 1)
    first = await layers.image_for(first_run, source, "ci/build.Dockerfile", 256)
    second_run = make_run(tmp_path, project_id, 2)
    second = await layers.image_for(second_run, source, "ci/build.Dockerfile", 256)

    assert first.use.result == "miss" and first.use.save_seconds is not None
    assert second.use.result == "hit" and second.use.save_seconds is None
    assert second.image_id == first.image_id
    assert second.use.key == first.use.key and second.use.size_bytes > 0
    assert any("Layer cache: hit" in line for line in second_run.logs.lines)  # type: ignore[attr-defined]
    output = docker_client.containers.run(first.image_id, "cat /opt/layer-marker", remove=True)
    assert output == b"built\n"

    # Another content is another image; clearing the project's caches rebuilds it.
    (source / "ci" / "tool.sh").write_text("echo tool 2\n")
    changed = await layers.image_for(
        make_run(tmp_path, project_id, 3), source, "ci/build.Dockerfile", 256
    )
    assert changed.use.result == "miss" and changed.use.key != first.use.key
    await index.clear(project_id)
    rebuilt = await layers.image_for(
        make_run(tmp_path, project_id, 4), source, "ci/build.Dockerfile", 256
    )
    assert rebuilt.use.result == "miss" and rebuilt.image_id != changed.image_id
    # The images no cache index entry names any more are gone.
    remaining = docker_client.images.list(filters={"label": f"{LABEL_LAYER_PROJECT}={project_id}"})
    assert [image.id for image in remaining] == [rebuilt.image_id]


async def test_a_failing_dockerfile_fails_with_its_error(
    make_settings: Callable[..., Settings],
    redis: aioredis.Redis,
    docker_client: docker.DockerClient,
    project_id: str,
    tmp_path: Path,
) -> None:
    source = tmp_path / "workspace"
    source.mkdir()
    (source / "Dockerfile").write_text(f"FROM {BUILD_IMAGE}\nRUN exit 3\n")
    layers = LayerCache(make_settings(build_network="bridge"), docker_client, CacheIndex(redis))

    with pytest.raises(LayerCacheError, match="building the Dockerfile failed"):
        await layers.image_for(make_run(tmp_path, project_id, 1), source, "Dockerfile", 256)


async def test_a_dockerfile_outside_the_repository_or_a_link_is_refused(
    make_settings: Callable[..., Settings],
    redis: aioredis.Redis,
    docker_client: docker.DockerClient,
    project_id: str,
    tmp_path: Path,
) -> None:
    source = tmp_path / "workspace"
    (source / "ci").mkdir(parents=True)
    outside = tmp_path / "Dockerfile"
    outside.write_text(f"FROM {BUILD_IMAGE}\n")
    (source / "ci" / "Dockerfile").symlink_to(outside)
    (source / "linked").symlink_to(tmp_path)
    layers = LayerCache(make_settings(), docker_client, CacheIndex(redis))

    for dockerfile in ("ci/Dockerfile", "linked/Dockerfile", "missing/Dockerfile"):
        with pytest.raises(LayerCacheError):
            await layers.image_for(make_run(tmp_path, project_id, 1), source, dockerfile, 256)


def test_base_images_are_the_stages_sources() -> None:
    text = (
        "# syntax=docker/dockerfile:1\n"
        "FROM --platform=linux/amd64 node:22 AS deps\n"
        "RUN echo \\\n  done\n"
        "FROM deps AS build\n"
        "from python:3.12-slim\n"
        "COPY --from=build /x /x\n"
    )
    assert base_images(text) == ["node:22", "python:3.12-slim"]
    with pytest.raises(LayerCacheError, match="build arguments"):
        base_images("ARG BASE=node\nFROM $BASE\n")
    with pytest.raises(LayerCacheError, match="no FROM"):
        base_images("RUN true\n")


def test_a_repository_naming_a_layer_image_never_gets_the_local_copy(
    make_settings: Callable[..., Settings],
) -> None:
    """Layer images run by id for their own project; by name they are as untrusted as any."""
    trusted = make_settings().trusted_build_images
    image = f"{LAYER_REPOSITORY}:p_other-0123456789abcdef"
    assert image_source(image, pull_policy="missing", trusted=trusted) == "registry"


def test_every_stage_but_scratch_gets_the_ca_files_and_variables_after_its_from() -> None:
    trust = BuildCaTrust(
        mounts={"/data/build-ca/ca-bundle.crt": "/etc/gobuild/ca/ca-bundle.crt"},
        env={"SSL_CERT_FILE": "/etc/gobuild/ca/ca-bundle.crt"},
        extra_certificates=1,
    )
    added = (
        "COPY --from=ca:1 /etc/gobuild/ca/ /etc/gobuild/ca/\n"
        "ARG SSL_CERT_FILE=/etc/gobuild/ca/ca-bundle.crt"
    )
    text = (
        "# syntax=docker/dockerfile:1\n"
        "FROM --platform=linux/amd64 \\\n"
        "  # a comment inside the instruction\n"
        "  node:22 AS deps\n"
        "RUN echo \\\n  FROM not-an-instruction\n"
        "FROM scratch AS empty\n"
        "from python:3.12-slim\n"
        "RUN pip install -r requirements.txt\n"
    )
    assert trusting_dockerfile(text, "ca:1", trust) == (
        "# syntax=docker/dockerfile:1\n"
        "FROM --platform=linux/amd64 \\\n"
        "  # a comment inside the instruction\n"
        f"  node:22 AS deps\n{added}\n"
        "RUN echo \\\n  FROM not-an-instruction\n"
        "FROM scratch AS empty\n"
        f"from python:3.12-slim\n{added}\n"
        "RUN pip install -r requirements.txt\n"
    )
    escaped = "# escape=`\nFROM node:22 `\n  AS deps\nRUN dir c:\\\nFROM deps\n"
    assert trusting_dockerfile(escaped, "ca:1", trust) == (
        f"# escape=`\nFROM node:22 `\n  AS deps\n{added}\nRUN dir c:\\\nFROM deps\n{added}\n"
    )
