"""The credentials of a repository URL (`user:token`), kept encrypted.

The gateway encrypts them when a project is saved; only a builder decrypts them, right before
it fetches. The key is derived from GOBUILD_SECRET_KEY or, when that is empty, from a secret
generated once and kept in Redis, as the token signing secret is (`auth.signing`).
"""

from __future__ import annotations

import base64
import secrets

import redis.asyncio as aioredis
from cryptography.fernet import Fernet, InvalidToken

from gobuild.platform.auth.signing import derive_secret
from gobuild.platform.config import Settings
from gobuild.platform.stores.keys import KEY_SECRET_KEY

REPO_CREDENTIALS_PURPOSE = "repo-credentials"


class UnreadableCredentials(ValueError):
    """Encrypted credentials this key cannot decrypt (another instance's key, or altered)."""


async def load_secret_key(redis: aioredis.Redis, settings: Settings) -> str:
    """GOBUILD_SECRET_KEY, or the key generated once and kept in Redis.

    The first process to need it stores a random one (SET NX); every other gateway and builder
    reads the same one.
    """
    if settings.secret_key:
        return settings.secret_key
    await redis.set(KEY_SECRET_KEY, secrets.token_urlsafe(48), nx=True)
    key = await redis.get(KEY_SECRET_KEY)
    if not key:
        raise RuntimeError(f"Redis lost {KEY_SECRET_KEY} right after it was written")
    return key


class RepoCredentialCipher:
    """Encrypts and decrypts repository credentials (Fernet: AES-CBC with an HMAC)."""

    def __init__(self, secret_key: str) -> None:
        key = base64.urlsafe_b64encode(derive_secret(secret_key, REPO_CREDENTIALS_PURPOSE))
        self._fernet = Fernet(key)

    @classmethod
    async def load(cls, redis: aioredis.Redis, settings: Settings) -> RepoCredentialCipher:
        return cls(await load_secret_key(redis, settings))

    def encrypt(self, userinfo: str) -> str:
        return self._fernet.encrypt(userinfo.encode()).decode()

    def decrypt(self, token: str) -> str:
        try:
            return self._fernet.decrypt(token.encode()).decode()
        except (InvalidToken, UnicodeDecodeError):
            raise UnreadableCredentials(
                "the repository credentials cannot be decrypted with this instance's "
                "GOBUILD_SECRET_KEY; register the repository URL again"
            ) from None


# Forge tokens and outgoing webhook secrets (the notification service's).
NOTIFICATION_SECRETS_PURPOSE = "notification-secrets"
# A project's secret build variables: the gateway encrypts them, only builders decrypt them.
BUILD_SECRETS_PURPOSE = "build-secrets"


class UnreadableSecret(ValueError):
    """A secret this key cannot decrypt (another instance's key, or altered)."""


class SecretCipher:
    """Encrypts and decrypts another kind of secret kept at rest with the instance's key,
    derived for `purpose`, so no kind of ciphertext decrypts as another (Fernet, as above)."""

    def __init__(self, secret_key: str, purpose: str) -> None:
        key = base64.urlsafe_b64encode(derive_secret(secret_key, purpose))
        self._fernet = Fernet(key)
        self.purpose = purpose

    @classmethod
    async def load(cls, redis: aioredis.Redis, settings: Settings, purpose: str) -> SecretCipher:
        return cls(await load_secret_key(redis, settings), purpose)

    def encrypt(self, secret: str) -> str:
        return self._fernet.encrypt(secret.encode()).decode()

    def decrypt(self, token: str) -> str:
        try:
            return self._fernet.decrypt(token.encode()).decode()
        except (InvalidToken, UnicodeDecodeError):
            raise UnreadableSecret(
                f"a stored secret ({self.purpose}) cannot be decrypted with this instance's "
                "GOBUILD_SECRET_KEY; set it again"
            ) from None
