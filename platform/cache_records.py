"""What the cache index keeps of each cache a project has (`stores.caches.CacheIndex`), and the
names a cache may have: its kind and key become storage paths and Docker tags."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from gobuild.platform.events import CacheKind, utcnow

# Caches whose content the storage service keeps (a layer cache is an image on each builder).
StoredCacheKind = Literal["dependencies", "incremental"]
STORED_CACHE_KINDS: tuple[StoredCacheKind, ...] = ("dependencies", "incremental")
CACHE_KEY_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")


def is_valid_cache_key(value: str) -> bool:
    return CACHE_KEY_PATTERN.fullmatch(value) is not None


class CacheEntry(BaseModel):
    """One cache of one project: where it came from and when it was last used."""

    project_id: str
    kind: CacheKind
    key: str = Field(pattern=CACHE_KEY_PATTERN.pattern)
    size_bytes: int = Field(ge=0)
    # Of the archive storage keeps; a layer cache: the id of the image.
    sha256: str
    # The build image it was made with (dependencies and layers depend on it).
    image: str
    # The branch of the build that saved it, and whether that build was a production build:
    # a preview branch may use what production saved, never the other way round.
    branch: str | None = None
    production: bool = False
    build_id: str
    created_at: datetime = Field(default_factory=utcnow)
    last_used_at: datetime = Field(default_factory=utcnow)

    @property
    def field(self) -> str:
        """Its field in the project's hash of caches."""
        return cache_field(self.kind, self.key)


def cache_field(kind: str, key: str) -> str:
    return f"{kind}/{key}"
