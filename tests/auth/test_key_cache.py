"""The key cache under concurrency: one database read per stale prefix, and a revocation
is never undone by a read that began before it."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from faregate.auth import repository
from faregate.auth.errors import RevokedKey
from faregate.auth.service import KeyService
from faregate.store.db import create_engine, migrate


@pytest.fixture
async def service(tmp_path: Path) -> Any:
    url = f"sqlite+aiosqlite:///{tmp_path / 'keys.db'}"
    await asyncio.to_thread(migrate, url)
    engine = create_engine(url)
    yield KeyService(engine, None, ttl=0.0)
    await engine.dispose()


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
    gate = asyncio.Event()

    async def slow(conn: Any, prefix: str) -> Any:
        found = await real(conn, prefix)
        await gate.wait()
        return found

    monkeypatch.setattr(repository, "key_by_prefix", slow)
    early = asyncio.create_task(service.authenticate(key))
    await asyncio.sleep(0.05)
    monkeypatch.setattr(repository, "key_by_prefix", real)
    await service.revoke(row["id"])
    gate.set()
    await early  # it read the row before the revocation
    with pytest.raises(RevokedKey):
        await service.authenticate(key)
