"""The `build-logs` topic is created with a retention, so a build that floods its log cannot
fill the broker for good; a broker that refuses the configuration still gets the topic."""

from __future__ import annotations

import logging
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from gobuild.platform.bus import ensure_topics
from gobuild.platform.config import Settings
from gobuild.platform.events import ALL_TOPICS, TOPIC_BUILD_LOGS, TOPIC_BUILD_STATUS

INVALID_CONFIG = 40  # Kafka's error code for a topic configuration the broker refuses


async def topic_config(bootstrap: str, topic: str) -> dict[str, str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        described = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
        topics = set(await admin.list_topics())
    finally:
        await admin.close()
    assert topic in topics
    return {entry[0]: entry[1] for entry in described[0].resources[0][4]}


async def test_the_build_logs_topic_is_created_with_its_retention_and_the_others_without(
    make_settings: Callable[..., Settings], fresh_kafka_bootstrap: str
) -> None:
    settings = make_settings(
        kafka_bootstrap=fresh_kafka_bootstrap,
        kafka_log_retention_hours=2,
        kafka_log_retention_bytes=1024 * 1024,
    )

    await ensure_topics(settings)

    logs = await topic_config(fresh_kafka_bootstrap, TOPIC_BUILD_LOGS)
    assert (logs["retention.ms"], logs["retention.bytes"]) == (str(2 * 3600 * 1000), "1048576")
    assert "retention.ms" not in await topic_config(fresh_kafka_bootstrap, TOPIC_BUILD_STATUS)


async def test_a_broker_refusing_the_retention_still_gets_the_topic_without_it(
    make_settings: Callable[..., Settings],
    fresh_kafka_bootstrap: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    create_topics = AIOKafkaAdminClient.create_topics

    async def refusing_configs(
        self: AIOKafkaAdminClient, new_topics: list[NewTopic], *args: Any, **kwargs: Any
    ) -> Any:
        """What a broker without topic configs answers: the configured topics are refused."""
        plain = [topic for topic in new_topics if not topic.topic_configs]
        refused = [topic for topic in new_topics if topic.topic_configs]
        created = await create_topics(self, plain, *args, **kwargs) if plain else None
        errors = list(created.topic_errors) if created is not None else []
        errors += [(topic.name, INVALID_CONFIG, "unknown config") for topic in refused]
        return SimpleNamespace(topic_errors=errors)

    monkeypatch.setattr(AIOKafkaAdminClient, "create_topics", refusing_configs)
    settings = make_settings(kafka_bootstrap=fresh_kafka_bootstrap)

    with caplog.at_level(logging.WARNING, logger="gobuild.platform.bus"):
        await ensure_topics(settings)

    for topic in ALL_TOPICS:
        assert "retention.ms" not in await topic_config(fresh_kafka_bootstrap, topic)
    assert [r.getMessage() for r in caplog.records if TOPIC_BUILD_LOGS in r.getMessage()] == [
        f"the broker refused topic {TOPIC_BUILD_LOGS} with config "
        f"{{'retention.ms': '86400000', 'retention.bytes': '1073741824'}} (error 40 unknown "
        "config); creating it without"
    ]
