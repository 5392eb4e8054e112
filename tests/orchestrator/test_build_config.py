"""The config a build request carries: the project's build settings, and the variables of the
build's target (production or preview), secrets still encrypted."""

from __future__ import annotations

from collections.abc import Callable

import redis.asyncio as aioredis

from gobuild.platform.config import Settings
from gobuild.platform.orchestrator.dispatch import resolve_config
from gobuild.platform.records import BuildVariable, Project
from gobuild.platform.repo_credentials import BUILD_SECRETS_PURPOSE, SecretCipher
from gobuild.platform.stores.build_variables import BuildVariableStore


async def test_a_build_gets_its_targets_variables_with_secrets_encrypted_and_the_settings(
    redis: aioredis.Redis, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings()
    cipher = await SecretCipher.load(redis, settings, BUILD_SECRETS_PURPOSE)
    project = Project(
        id="p_1",
        name="site",
        repo_url="https://example.com/site.git",
        provider="git",
        webhook_secret="w",
        build_command="make site",
        root_dir="apps/web",
    )
    store = BuildVariableStore(redis)
    token = cipher.encrypt("token-value")
    await store.put(
        "p_1", BuildVariable(name="TOKEN", value=token, secret=True, targets=["production"])
    )
    await store.put("p_1", BuildVariable(name="API", value="preview-api", targets=["preview"]))
    await store.put("p_1", BuildVariable(name="MODE", value="x", targets=["production", "preview"]))

    production = resolve_config(settings, project, await store.for_target("p_1", "production"))
    preview = resolve_config(settings, project, await store.for_target("p_1", "preview"))

    assert production.env == {"MODE": "x"}
    assert production.secret_env == {"TOKEN": token}
    assert "token-value" not in production.model_dump_json()
    assert preview.env == {"API": "preview-api", "MODE": "x"}
    assert preview.secret_env == {}
    assert (production.build, production.root_dir, production.install) == (
        "make site",
        "apps/web",
        None,
    )
    assert production.image == settings.build_image
