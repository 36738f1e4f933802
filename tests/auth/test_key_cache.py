"""The key cache under concurrency: one database read per stale prefix, a revocation is
never undone by a read that began before it, and an entry is read again in the background
from half its TTL (requests go on with it) but never served past the TTL."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from faregate.auth import keys, repository
from faregate.auth.errors import InvalidKey, RevokedKey
from faregate.auth.service import KeyService
from faregate.store.db import create_engine
from faregate.store.tables.gateway import api_keys
from tests.conftest import migrated


@pytest.fixture
async def service(tmp_path: Path) -> Any:
    url = f"sqlite+aiosqlite:///{tmp_path / 'keys.db'}"
    await migrated(url)
    engine = create_engine(url)
    yield KeyService(engine, None, ttl=0.0)
    await engine.dispose()


def _hold_back_reads(monkeypatch: pytest.MonkeyPatch) -> tuple[asyncio.Event, list[str]]:
    """Key reads from now on wait, after reading, until the returned gate is set; the list
    records each read's prefix."""
    real = repository.key_by_prefix
    gate = asyncio.Event()
    reads: list[str] = []

    async def held_back(conn: Any, prefix: str) -> Any:
        reads.append(prefix)
        found = await real(conn, prefix)
        await gate.wait()
        return found

    monkeypatch.setattr(repository, "key_by_prefix", held_back)
    return gate, reads


async def test_concurrent_requests_on_a_stale_key_share_one_database_read(
    service: KeyService, monkeypatch: pytest.MonkeyPatch
) -> None:
    key, _ = await service.create_key(name="k")
    reads = 0
    real = repository.key_by_prefix

    async def counted(conn: Any, prefix: str) -> Any:
        nonlocal reads
        reads += 1
        return await real(conn, prefix)

    monkeypatch.setattr(repository, "key_by_prefix", counted)
    principals = await asyncio.gather(*(service.authenticate(key) for _ in range(20)))
    assert reads == 1
    assert len({p.key_id for p in principals}) == 1


async def test_a_read_begun_before_a_revocation_does_not_cache_the_key_as_valid(
    service: KeyService, monkeypatch: pytest.MonkeyPatch
) -> None:
    service._ttl = 60.0
    key, row = await service.create_key(name="k")
    real = repository.key_by_prefix
    gate, _ = _hold_back_reads(monkeypatch)
    early = asyncio.create_task(service.authenticate(key))
    await asyncio.sleep(0.05)
    monkeypatch.setattr(repository, "key_by_prefix", real)
    await service.revoke(row["id"])
    gate.set()
    await early  # it read the row before the revocation
    with pytest.raises(RevokedKey):
        await service.authenticate(key)


def _age(service: KeyService, key: str, seconds: float) -> None:
    """Make the cached entry of `key` `seconds` older than it is."""
    prefix = keys.parse_prefix(key)
    assert prefix is not None
    principal, key_hash, fetched = service._cache[prefix]
    service._cache[prefix] = (principal, key_hash, fetched - seconds)


async def test_past_half_its_ttl_a_key_is_read_again_while_requests_go_on(
    service: KeyService, monkeypatch: pytest.MonkeyPatch
) -> None:
    service._ttl = 60.0
    key, row = await service.create_key(name="k")
    await service.authenticate(key)
    gate, reads = _hold_back_reads(monkeypatch)
    # Another replica revokes the key: this process learns it from the next read.
    async with service._engine.begin() as conn:
        await conn.execute(
            api_keys.update().where(api_keys.c.id == row["id"]).values(revoked_at=datetime.now(UTC))
        )
    _age(service, key, 40)  # past half the TTL, within it
    # Twenty requests go on with the cached entry while one read, held back, is under way.
    served = await asyncio.wait_for(
        asyncio.gather(*(service.authenticate(key) for _ in range(20))), timeout=10
    )
    assert {p.key_id for p in served} == {row["id"]}
    assert len(reads) == 1
    gate.set()
    await asyncio.gather(*list(service._loading.values()))  # the background read lands
    with pytest.raises(RevokedKey):
        await service.authenticate(key)
    assert len(reads) == 1


async def test_past_its_ttl_a_request_waits_for_the_read(
    service: KeyService, monkeypatch: pytest.MonkeyPatch
) -> None:
    service._ttl = 60.0
    key, row = await service.create_key(name="k")
    await service.authenticate(key)
    await service.revoke(row["id"])  # in this process: the entry is dropped at once
    with pytest.raises(RevokedKey):
        await service.authenticate(key)
    gate, _ = _hold_back_reads(monkeypatch)
    _age(service, key, 61)
    waiting = asyncio.create_task(service.authenticate(key))
    await asyncio.sleep(0.05)
    assert not waiting.done()  # an entry past the TTL is never served
    gate.set()
    with pytest.raises(RevokedKey):
        await waiting


async def test_a_proved_key_is_not_hashed_again_and_no_other_key_passes_for_it(
    service: KeyService, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The key last proved for a prefix is remembered with its hash: its next requests are
    compared with it, not hashed. A wrong secret with the same prefix (ASCII or not) is
    hashed and refused, and a hash read anew that differs (the row changed) is checked
    again."""
    key, _ = await service.create_key(name="k")
    hashed: list[str] = []
    real = keys.hash_key

    def counted(text: str) -> str:
        hashed.append(text)
        return real(text)

    monkeypatch.setattr(keys, "hash_key", counted)
    first = await service.authenticate(key)
    assert len(hashed) == 1
    for _ in range(5):
        assert (await service.authenticate(key)).key_id == first.key_id
    assert len(hashed) == 1  # proved once
    prefix = keys.parse_prefix(key)
    for wrong in (key[:-1] + ("a" if key[-1] != "a" else "b"), key + "x", key[:-1] + "é"):
        with pytest.raises(InvalidKey):
            await service.authenticate(wrong)
    assert len(hashed) == 4  # each wrong key hashed, none remembered
    assert (await service.authenticate(key)).key_id == first.key_id
    assert len(hashed) == 4
    # The stored hash changes (a row rewritten by hand): the remembered key no longer
    # counts, and the key is refused once it no longer matches.
    assert prefix is not None
    async with service._engine.begin() as conn:
        await conn.execute(
            api_keys.update().where(api_keys.c.prefix == prefix).values(key_hash="0" * 64)
        )
    with pytest.raises(InvalidKey):
        await service.authenticate(key)  # ttl=0: read again, its hash no longer matches
