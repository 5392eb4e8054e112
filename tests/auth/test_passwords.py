"""Argon2id password hashes."""

from __future__ import annotations

from argon2 import PasswordHasher

from gobuild.platform.auth.passwords import hash_password, needs_rehash, verify_password


async def test_hash_verifies_only_the_right_password() -> None:
    password_hash = await hash_password("correct horse battery staple")
    assert password_hash.startswith("$argon2id$")
    assert await verify_password(password_hash, "correct horse battery staple")
    assert not await verify_password(password_hash, "Correct horse battery staple")


async def test_malformed_hash_is_a_mismatch_and_needs_rehash() -> None:
    assert not await verify_password("not-a-hash", "anything")
    assert needs_rehash("not-a-hash")


async def test_weaker_hash_needs_rehash_and_current_one_does_not() -> None:
    weak = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1).hash("pw")
    assert await verify_password(weak, "pw")
    assert needs_rehash(weak)
    assert not needs_rehash(await hash_password("pw"))
