"""The Alembic migrations build exactly the schema the tables declare, on both databases."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from tests.conftest import create_pg_database, drop_pg_database

from faregate.store.db import create_engine, migrate
from faregate.store.tables import metadata


async def _diff(url: str) -> list:
    await asyncio.to_thread(migrate, url)
    engine = create_engine(url)
    async with engine.connect() as conn:
        diff = await conn.run_sync(
            lambda sync: compare_metadata(MigrationContext.configure(sync), metadata)
        )
    await engine.dispose()
    return diff


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
async def test_migrations_match_the_declared_tables(backend: str, tmp_path: Path) -> None:
    if backend == "sqlite":
        assert await _diff(f"sqlite+aiosqlite:///{tmp_path / 'm.db'}") == []
        return
    url = await create_pg_database()
    try:
        assert await _diff(url) == []
    finally:
        await drop_pg_database(url)
