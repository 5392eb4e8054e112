"""Fixtures for the storage service tests."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import pytest
from storage_testing import SITE_ENTRIES, StorageUnderTest, build_tar_gz, create_storage_app

from gobuild.platform.config import Settings


@pytest.fixture
async def storage(make_settings: Callable[..., Settings]) -> AsyncIterator[StorageUnderTest]:
    """The storage app (started, without the log consumer) and a test client."""
    settings = make_settings()
    app = create_storage_app(settings, consume_logs=False)
    async with app.test_app() as test_app:
        yield StorageUnderTest(app, test_app.test_client(), settings)


@pytest.fixture
def site_archive() -> bytes:
    """A small static site as a build would produce it."""
    return build_tar_gz(SITE_ENTRIES)
