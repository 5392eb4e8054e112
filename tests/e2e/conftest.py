"""One `gobuild dev` for the whole e2e module (starting it takes a few seconds)."""

from __future__ import annotations

from collections.abc import Iterator

import docker
import pytest

from tests.conftest import BUILD_IMAGE
from tests.e2e.stack import Stack, start_stack


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    docker.from_env().images.get(BUILD_IMAGE)  # fails clearly if scripts/setup.sh has not run
    running = start_stack(tmp_path_factory.mktemp("gobuild"), BUILD_IMAGE)
    yield running
    running.stop()
