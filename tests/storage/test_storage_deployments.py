"""Deployments: unpack a stored artifact, serve its files safely, remove it."""

from __future__ import annotations

import os
from collections.abc import Callable

import httpx
from quart import Response
from storage_testing import (
    StorageUnderTest,
    build_tar_gz,
    create_storage_app,
    file,
    running_server,
)

from gobuild.platform.config import Settings
from gobuild.platform.storage_client import internal_headers


async def deploy(
    storage: StorageUnderTest, archive: bytes, build_id: str = "b1", deployment_id: str = "site"
) -> Response:
    uploaded = await storage.client.put(f"/artifacts/{build_id}", data=archive)
    assert uploaded.status_code == 201
    return await storage.client.post(f"/deployments/{deployment_id}", json={"build_id": build_id})


async def test_deploying_a_build_unpacks_it_and_redeploying_is_idempotent(
    storage: StorageUnderTest, site_archive: bytes
) -> None:
    created = await deploy(storage, site_archive)
    assert created.status_code == 201
    body = await created.get_json()
    assert body["deployment_id"] == "site"
    assert body["build_id"] == "b1"
    assert body["files"] == 7  # the symlink is not a file of its own
    assert body["bytes"] > 0

    again = await storage.client.post("/deployments/site", json={"build_id": "b1"})
    assert again.status_code == 200
    assert await again.get_json() == body
    described = await storage.client.get("/deployments/site")
    assert await described.get_json() == body


async def test_deploying_another_build_under_a_taken_id_is_a_conflict(
    storage: StorageUnderTest, site_archive: bytes
) -> None:
    await deploy(storage, site_archive)
    await storage.client.put("/artifacts/b2", data=site_archive)
    response = await storage.client.post("/deployments/site", json={"build_id": "b2"})
    assert response.status_code == 409
    assert await response.get_json() == {
        "error": "deployment exists",
        "detail": "deployment 'site' already holds build 'b1'",
    }


async def test_unsafe_archive_is_refused_with_the_entry_named_and_nothing_deployed(
    storage: StorageUnderTest,
) -> None:
    archive = build_tar_gz([file("index.html", "ok"), file("../evil", "x")])
    response = await deploy(storage, archive)
    assert response.status_code == 422
    assert await response.get_json() == {
        "error": "unsafe archive",
        "detail": "entry '../evil' escapes the deployment root",
    }
    assert list(storage.settings.deployments_dir.iterdir()) == []
    assert not (storage.settings.data_dir / "evil").exists()
    assert (await storage.client.get("/deployments/site/files/")).status_code == 404


async def test_archive_that_is_not_a_tar_gz_is_refused(storage: StorageUnderTest) -> None:
    response = await deploy(storage, b"plain text, not an archive")
    assert response.status_code == 422
    assert (await response.get_json())["error"] == "invalid archive"


async def test_deploying_a_build_without_artifact_is_404(storage: StorageUnderTest) -> None:
    response = await storage.client.post("/deployments/site", json={"build_id": "never-built"})
    assert response.status_code == 404
    assert await response.get_json() == {
        "error": "artifact not found",
        "detail": "build 'never-built' has no stored artifact",
    }


async def test_bad_deployment_requests_are_rejected(storage: StorageUnderTest) -> None:
    bad_id = await storage.client.post("/deployments/Not_A_Label", json={"build_id": "b1"})
    assert bad_id.status_code == 400
    assert (await bad_id.get_json())["error"] == "invalid deployment id"
    too_long = await storage.client.post("/deployments/" + "a" * 64, json={"build_id": "b1"})
    assert too_long.status_code == 400
    bad_build = await storage.client.post("/deployments/site", json={"build_id": "../x"})
    assert (await bad_build.get_json())["error"] == "invalid build id"
    not_json = await storage.client.post(
        "/deployments/site", data=b"{nope", headers={"Content-Type": "application/json"}
    )
    assert not_json.status_code == 400
    assert (await not_json.get_json())["error"] == "invalid json"


async def test_files_are_served_with_index_pages_and_content_types(
    storage: StorageUnderTest, site_archive: bytes
) -> None:
    await deploy(storage, site_archive)
    expected = {
        "/": ("<h1>home</h1>", "text/html; charset=utf-8"),
        "/index.html": ("<h1>home</h1>", "text/html; charset=utf-8"),
        "/about": ("<h1>about</h1>", "text/html; charset=utf-8"),
        "/about/": ("<h1>about</h1>", "text/html; charset=utf-8"),
        "/assets/app.js": ("console.log('hi')", "application/javascript; charset=utf-8"),
        "/latest.js": ("console.log('hi')", "application/javascript; charset=utf-8"),
        "/assets/style.css": ("body { color: red }", "text/css; charset=utf-8"),
        "/logo.svg": ("<svg xmlns='http://www.w3.org/2000/svg'/>", "image/svg+xml; charset=utf-8"),
        "/data.json": ('{"ok": true}', "application/json; charset=utf-8"),
        "/module.wasm": ("\x00asm\x01\x00\x00\x00", "application/wasm"),
    }
    for path, (content, content_type) in expected.items():
        response = await storage.client.get(f"/deployments/site/files{path}")
        assert response.status_code == 200, path
        assert await response.get_data(as_text=True) == content, path
        assert response.headers["Content-Type"] == content_type, path
        assert response.headers["Content-Length"] == str(len(content.encode())), path
        assert response.headers["ETag"], path
        assert response.headers["Last-Modified"] == "Tue, 14 Nov 2023 22:13:20 GMT", path


async def test_unchanged_file_answers_304_to_if_none_match(
    storage: StorageUnderTest, site_archive: bytes
) -> None:
    await deploy(storage, site_archive)
    first = await storage.client.get("/deployments/site/files/assets/app.js")
    again = await storage.client.get(
        "/deployments/site/files/assets/app.js", headers={"If-None-Match": first.headers["ETag"]}
    )
    assert again.status_code == 304
    assert await again.get_data() == b""


async def test_missing_files_and_escaping_paths_are_404(
    storage: StorageUnderTest, site_archive: bytes
) -> None:
    await deploy(storage, site_archive)
    # Something worth stealing just outside the deployment, and a link to it planted inside.
    secret = storage.settings.deployments_dir / "secret.txt"
    secret.write_text("secret")
    site = storage.settings.deployments_dir / "site"
    os.symlink(secret, site / "planted.txt")
    os.symlink("../secret.txt", site / "planted-relative.txt")

    for path in [
        "/deployments/site/files/missing.html",
        "/deployments/site/files/assets/missing.js",
        "/deployments/site/files/../secret.txt",
        "/deployments/site/files/../../etc/passwd",
        "/deployments/site/files/%2e%2e/secret.txt",
        "/deployments/site/files/%2e%2e/%2e%2e/etc/passwd",
        "/deployments/site/files/about/%2e%2e/%2e%2e/secret.txt",
        "/deployments/site/files/planted.txt",
        "/deployments/site/files/planted-relative.txt",
        "/deployments/nosuchsite/files/",
        "/deployments/Bad_Id/files/index.html",
    ]:
        response = await storage.client.get(path)
        assert response.status_code == 404, path
        assert (await response.get_json())["error"] == "not found", path


async def test_deleted_deployment_is_no_longer_served(
    storage: StorageUnderTest, site_archive: bytes
) -> None:
    await deploy(storage, site_archive)
    response = await storage.client.delete("/deployments/site")
    assert response.status_code == 204
    assert (await storage.client.get("/deployments/site/files/")).status_code == 404
    assert (await storage.client.get("/deployments/site")).status_code == 404
    assert list(storage.settings.deployments_dir.iterdir()) == [
        storage.settings.deployments_dir / ".meta"
    ]
    assert (await storage.client.delete("/deployments/site")).status_code == 204
    # The id is free again.
    assert (await deploy(storage, site_archive, build_id="b1")).status_code == 201


async def test_head_and_escaping_raw_paths_over_a_real_server(
    make_settings: Callable[..., Settings], site_archive: bytes
) -> None:
    settings = make_settings()
    app = create_storage_app(settings, consume_logs=False)
    headers = internal_headers(settings.internal_token)
    async with (
        running_server(app) as base_url,
        httpx.AsyncClient(base_url=base_url, headers=headers) as client,
    ):
        await client.put("/artifacts/b1", content=site_archive)
        await client.post("/deployments/site", json={"build_id": "b1"})

        head = await client.head("/deployments/site/files/about/")
        assert head.status_code == 200
        assert head.content == b""
        assert head.headers["content-length"] == str(len("<h1>about</h1>"))
        assert head.headers["content-type"] == "text/html; charset=utf-8"

        # Send the dot segments as they are (a browser or httpx would normalize them away).
        for raw in [
            b"/deployments/site/files/../../etc/passwd",
            b"/deployments/site/files/%2e%2e/x",
        ]:
            url = httpx.URL(base_url).copy_with(raw_path=raw)
            response = await client.get(url)
            assert response.status_code == 404, raw
            assert response.json()["error"] == "not found"
