"""Two writers (two replicas) inserting the same events at the same time store and roll
them up once."""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select

from faregate.billing import repository as repo
from faregate.metering.writer import UsageWriter
from faregate.store.db import create_engine
from faregate.store.tables.metering import usage_rollups
from tests.conftest import create_pg_database, drop_pg_database, migrated
from tests.stored_events import stored_events


async def _totals(engine: Any, code: str) -> tuple[int, int, Any]:
    async with engine.connect() as conn:
        stored = len(await stored_events(conn, code=code))
        rows = (
            await conn.execute(
                select(usage_rollups.c.events_count, usage_rollups.c.value_sum).where(
                    usage_rollups.c.code == code
                )
            )
        ).all()
    return stored, sum(r[0] for r in rows), sum(float(r[1] or 0) for r in rows)


async def test_two_writers_inserting_the_same_events_at_once_store_them_once(
    tmp_path: Path,
) -> None:
    url = await create_pg_database()
    try:
        await migrated(url)
        engine = create_engine(url)
        async with engine.begin() as conn:
            await repo.insert_metric(
                conn,
                {
                    "code": "calls",
                    "name": "Calls",
                    "aggregation_type": "sum_agg",
                    "field_name": "n",
                    "filters": [],
                },
            )
        now = datetime.now(UTC)
        rows = [
            {
                "transaction_id": f"t{i}",
                "external_subscription_id": "s",
                "code": "calls",
                "timestamp": now,
                "properties": {"n": 1},
                "source": "api",
                "created_at": now,
            }
            for i in range(3000)
        ]
        writers = [UsageWriter(engine, tmp_path / f"j{k}") for k in range(3)]
        for k, writer in enumerate(writers):
            mine = rows[:]
            random.Random(k).shuffle(mine)
            for start in range(0, len(mine), 500):
                writer.record_events(mine[start : start + 500])
        await asyncio.gather(*(w.flush() for w in writers))
        assert await _totals(engine, "calls") == (3000, 3000, 3000.0)
        for writer in writers:
            await writer.close()
        await engine.dispose()
    finally:
        await drop_pg_database(url)


async def test_a_metric_created_after_its_events_rolls_them_up(tmp_path: Path) -> None:
    from faregate.billing.metrics import BillableMetric
    from faregate.metering import rollups

    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'm.db'}")
    await migrated(str(engine.url))
    now = datetime.now(UTC)
    writer = UsageWriter(engine, tmp_path / "j")
    writer.record_events(
        [
            {
                "transaction_id": f"t{i}",
                "external_subscription_id": "s",
                "code": "late",
                "timestamp": now,
                "properties": {"n": 2},
                "source": "gateway",
                "created_at": now,
            }
            for i in range(5)
        ]
    )
    await writer.flush()
    assert (await _totals(engine, "late"))[:2] == (5, 0)  # no metric yet: nothing rolled up
    definition = {
        "code": "late",
        "name": "Late",
        "aggregation_type": "sum_agg",
        "field_name": "n",
        "filters": [],
    }
    async with engine.begin() as conn:
        await repo.insert_metric(conn, definition)
        await rollups.rebuild(conn, BillableMetric.from_dict(definition))
    assert await _totals(engine, "late") == (5, 5, 10.0)
    await writer.close()
    await engine.dispose()
