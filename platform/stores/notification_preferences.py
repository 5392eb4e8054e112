"""Which stages each user is e-mailed about (`NotificationPreferences`), in Redis."""

from __future__ import annotations

import redis.asyncio as aioredis

from gobuild.platform.notification_records import NotificationPreferences
from gobuild.platform.stores.keys import key_notification_preferences


class PreferenceStore:
    """Notification preferences by username; a user who set none gets no e-mail."""

    def __init__(self, redis: aioredis.Redis) -> None:
        self.redis = redis

    async def get(self, username: str) -> NotificationPreferences:
        raw = await self.redis.get(key_notification_preferences(username))
        if not raw:
            return NotificationPreferences()
        return NotificationPreferences.model_validate_json(raw)

    async def get_many(self, usernames: list[str]) -> dict[str, NotificationPreferences]:
        if not usernames:
            return {}
        raws = await self.redis.mget([key_notification_preferences(u) for u in usernames])
        return {
            username: NotificationPreferences.model_validate_json(raw)
            for username, raw in zip(usernames, raws, strict=True)
            if raw
        }

    async def set(self, username: str, preferences: NotificationPreferences) -> None:
        await self.redis.set(key_notification_preferences(username), preferences.model_dump_json())
