"""A data set for retention tests: projects, builds and caches recorded through the stores with
the ages the test asks for, and their artifacts, logs, deployments and caches as real files in
a storage app that runs in-process (reached over `httpx.ASGITransport`)."""

from __future__ import annotations

import asyncio
import hashlib
import io
import tarfile
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import httpx
import redis.asyncio as aioredis
from quart import Quart

from gobuild.platform.auth.share_links import ShareLinkStore
from gobuild.platform.build_state import BuildState
from gobuild.platform.cache_records import CacheEntry
from gobuild.platform.config import Settings
from gobuild.platform.events import ArtifactRef, BuildTriggered, CacheKind, LogChunk, utcnow
from gobuild.platform.records import Build, Deployment, Project, new_deployment_id, new_id
from gobuild.platform.retention_records import RetentionOverrides
from gobuild.platform.storage.services import EXTENSION_KEY, StorageServices
from gobuild.platform.storage_client import StorageClient, StorageError, internal_headers
from gobuild.platform.stores.builds import BuildStore
from gobuild.platform.stores.caches import CacheIndex
from gobuild.platform.stores.deployment_records import DeploymentRecords
from gobuild.platform.stores.projects import ProjectStore
from gobuild.platform.stores.retention import RetentionPolicies
from gobuild.retention.storage_files import StorageFiles

REPO_URL = "https://github.com/jane/site.git"


def site_archive(build_id: str) -> bytes:
    """A small static site (its page names the build)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        page = f"<h1>{build_id}</h1>".encode()
        info = tarfile.TarInfo("index.html")
        info.size = len(page)
        tar.addfile(info, io.BytesIO(page))
    return buffer.getvalue()


@dataclass
class StorageUnderTest:
    """The storage app (started) and the client retention reaches it with."""

    app: Quart
    http: httpx.AsyncClient
    client: StorageClient
    settings: Settings

    @property
    def headers(self) -> dict[str, str]:
        return internal_headers(self.settings.internal_token)

    async def has_artifact(self, build_id: str) -> bool:
        response = await self.http.get(f"/artifacts/{build_id}/meta", headers=self.headers)
        assert response.status_code in (200, 404), response.text
        return response.status_code == 200

    async def has_log(self, build_id: str) -> bool:
        return await self.client.log_size(build_id) is not None

    async def has_deployment(self, deployment_id: str) -> bool:
        return await self.client.deployment_size(deployment_id) is not None

    async def has_cache(self, entry: CacheEntry) -> bool:
        path = f"/caches/{entry.project_id}/{entry.kind}/{entry.key}"
        response = await self.http.get(path, headers=self.headers)
        assert response.status_code in (200, 404), response.text
        return response.status_code == 200


class DataSet:
    """Records a project's builds as they would be after running, `age_days` ago."""

    def __init__(
        self, redis: aioredis.Redis, storage: StorageUnderTest, share_links: ShareLinkStore
    ) -> None:
        self.redis = redis
        self.storage = storage
        self.share_links = share_links
        self.builds = BuildStore(redis)
        self.deployments = DeploymentRecords(redis)

    async def project(self, name: str, **overrides: int) -> Project:
        project = Project(
            id=new_id("p_"),
            name=name,
            repo_url=REPO_URL,
            provider="github",
            webhook_secret="a-webhook-secret-of-some-length",
            created_at=utcnow() - timedelta(days=400),
        )
        assert await ProjectStore(self.redis).create(project)
        if overrides:
            await RetentionPolicies(self.redis).set(project.id, RetentionOverrides(**overrides))
        return project

    async def build(
        self,
        project: Project,
        *,
        age_days: float,
        state: BuildState = BuildState.SUCCEEDED,
        artifact: bool = True,
        log: bool = True,
        deploy: bool = False,
    ) -> Build:
        """A build created `age_days` ago (finished a minute later, if it finished), with an
        artifact, a log and a deployment in storage as asked."""
        created: datetime = utcnow() - timedelta(days=age_days)
        build = Build(
            id=new_id("b_"),
            project_id=project.id,
            number=await self.builds.next_number(project.id),
            source="api",
            repo_url=REPO_URL,
            ref="refs/heads/main",
            branch="main",
            created_at=created,
            updated_at=created,
        )
        trigger = BuildTriggered(
            build_id=build.id,
            project_id=project.id,
            source="api",
            repo_url=REPO_URL,
            ref=build.ref,
            branch="main",
            commit_sha=None,
        )
        await self.builds.record_trigger(build, trigger)
        await self.builds.forget_trigger(build.id)
        changes: dict[str, object] = {"state": state, "started_at": created}
        if state.is_terminal:
            changes["finished_at"] = created + timedelta(minutes=1)
        if log:
            await self._write_log(build)
        if artifact:
            changes["artifact"] = await self._upload_artifact(build.id)
        if deploy:
            deployment = await self._deploy(project, build, created + timedelta(minutes=1))
            changes["deployment_id"] = deployment.id
            changes["deployment_url"] = deployment.url
        updated = await self.builds.update(build.id, **changes)
        assert updated is not None
        return updated

    async def cache(
        self, project: Project, kind: CacheKind, key: str, *, unused_days: float
    ) -> CacheEntry:
        """A cache of the project that a build last used `unused_days` ago, in the cache index
        and (unless a layer cache: an image on builders) in storage."""
        content = f"the {kind} cache {key} of {project.id}".encode()
        if kind != "layer":
            response = await self.storage.http.put(
                f"/caches/{project.id}/{kind}/{key}",
                content=content,
                headers=self.storage.headers,
            )
            assert response.status_code == 201, response.text
        used = utcnow() - timedelta(days=unused_days)
        entry = CacheEntry(
            project_id=project.id,
            kind=kind,
            key=key,
            size_bytes=len(content),
            sha256=hashlib.sha256(content).hexdigest(),
            image="node:20",
            branch="main",
            production=True,
            build_id=new_id("b_"),
            created_at=used,
            last_used_at=used,
        )
        await CacheIndex(self.redis).record(entry)
        return entry

    async def share(self, build: Build) -> None:
        await self.share_links.create(build.id, "jane", project_id=build.project_id)

    async def promote(self, build: Build) -> None:
        """Make the build's deployment the production deployment (following the newest)."""
        deployment = await self._deployment_of(build)
        replacing = await self.deployments.production_alias(build.project_id)
        assert await self.deployments.promote_if_newer(deployment, replacing)

    async def pin(self, build: Build) -> None:
        """Promote the build's deployment by hand: the alias stays on it (pinned)."""
        await self.deployments.promote_and_pin(await self._deployment_of(build))

    async def _deployment_of(self, build: Build) -> Deployment:
        assert build.deployment_id is not None
        deployment = await self.deployments.get(build.deployment_id)
        assert deployment is not None
        return deployment

    async def _write_log(self, build: Build) -> None:
        services: StorageServices = self.storage.app.extensions[EXTENSION_KEY]
        chunk = LogChunk(
            build_id=build.id,
            project_id=build.project_id,
            seq=0,
            stream="stdout",
            lines=[f"building {build.id}", "done"],
            final=True,
        )
        assert await services.logs.apply([chunk]) == 1

    async def _upload_artifact(self, build_id: str) -> ArtifactRef:
        response = await self.storage.http.put(
            f"/artifacts/{build_id}", content=site_archive(build_id), headers=self.storage.headers
        )
        assert response.status_code == 201, response.text
        return ArtifactRef.model_validate_json(response.content)

    async def _deploy(self, project: Project, build: Build, created: datetime) -> Deployment:
        deployment = Deployment(
            id=new_deployment_id(project.name),
            project_id=project.id,
            build_id=build.id,
            number=build.number or 0,
            url="http://example.invalid/",
            created_at=created,
        )
        await self.storage.client.deploy(deployment.id, build.id)
        await self.deployments.create(deployment)
        return deployment


@dataclass
class CountingStorage:
    """Storage as retention sees it, counting each delete. Deletes wait for `go` if set; the
    process "dies" at the delete after `crash_after`; storage refuses the deletes in `refuse`
    (`"log:<build id>"`, `"deployment:<id>"`...)."""

    inner: StorageFiles
    go: asyncio.Event | None = None
    deletes: Counter[str] = field(default_factory=Counter)
    crash_after: int | None = None
    refuse: set[str] = field(default_factory=set)

    async def log_size(self, build_id: str) -> int | None:
        return await self.inner.log_size(build_id)

    async def deployment_size(self, deployment_id: str) -> int | None:
        return await self.inner.deployment_size(deployment_id)

    async def _deleting(self, what: str) -> None:
        if self.crash_after is not None and sum(self.deletes.values()) >= self.crash_after:
            raise RuntimeError("the retention process died")
        if what in self.refuse:
            raise StorageError(f"storage refused to delete {what} (HTTP 500)")
        if self.go is not None:
            await self.go.wait()
        self.deletes[what] += 1

    async def delete_artifact(self, build_id: str) -> None:
        await self._deleting(f"artifact:{build_id}")
        await self.inner.delete_artifact(build_id)

    async def delete_log(self, build_id: str) -> None:
        await self._deleting(f"log:{build_id}")
        await self.inner.delete_log(build_id)

    async def delete_deployment(self, deployment_id: str) -> None:
        await self._deleting(f"deployment:{deployment_id}")
        await self.inner.delete_deployment(deployment_id)

    async def delete_cache(self, project_id: str, kind: str, key: str) -> None:
        await self._deleting(f"cache:{project_id}/{kind}/{key}")
        await self.inner.delete_cache(project_id, kind, key)
