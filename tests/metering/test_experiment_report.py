"""A/B reports from stored request records match, number for number, the live statistics
fed with the same requests; percentiles and money checked by hand, on both databases."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from faregate.metering.experiments import experiment_report, list_experiments
from faregate.routing.experiments import ExperimentStats
from faregate.store.db import create_engine
from faregate.store.tables import metadata
from faregate.store.tables.metering import requests
from tests.conftest import create_pg_database, drop_pg_database

T0 = datetime(2026, 11, 1, tzinfo=UTC)


@pytest.fixture(params=["sqlite", "postgres"])
async def engine(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    postgres = request.param == "postgres"
    url = await create_pg_database() if postgres else f"sqlite+aiosqlite:///{tmp_path / 'r.db'}"
    engine = create_engine(url)
    async with engine.begin() as conn:
        await conn.run_sync(metadata.create_all)
    yield engine
    await engine.dispose()
    if postgres:
        await drop_pg_database(url)


def _row(i: int, arm: str, latency_ms: int, status: int = 200, **extra: Any) -> dict[str, Any]:
    return {
        "id": f"req_{arm}_{i}",
        "created_at": T0 + timedelta(minutes=i),
        "kind": "chat",
        "status": status,
        "tags": [],
        "latency_ms": Decimal(latency_ms),
        "input_tokens": 10,
        "output_tokens": 4,
        "cost_nanos": 1_500,  # $0.0000015
        "price_nanos": 2_000,
        "experiment": "exp",
        "arm": arm,
        **extra,
    }


async def test_stored_report_matches_hand_computed_figures_and_the_live_statistics(
    engine: AsyncEngine,
) -> None:
    # Arm a: latencies 1..100 ms, shuffled; arm b: 20 fast, 2 failures (slow, excluded).
    latencies = list(range(1, 101))
    random.Random(7).shuffle(latencies)
    rows = [_row(i, "a", ms) for i, ms in enumerate(latencies)]
    rows += [_row(i, "b", 10 + i) for i in range(20)]
    rows += [_row(100 + i, "b", 9_000, status=502, output_tokens=0) for i in range(2)]
    rows.append({**_row(0, "x", 5), "id": "req_other", "experiment": "other"})
    async with engine.begin() as conn:
        await conn.execute(requests.insert(), rows)
    live = ExperimentStats()
    for row in rows:
        if row["experiment"] == "exp":
            live.record(
                "exp",
                row["arm"],
                latency=float(row["latency_ms"]) / 1000,
                error=row["status"] >= 400,
                cost=Decimal(row["cost_nanos"]) / 10**9,
                price=Decimal(row["price_nanos"]) / 10**9,
                input_tokens=row["input_tokens"],
                output_tokens=row["output_tokens"],
            )

    async with engine.connect() as conn:
        stored = await experiment_report(conn, "exp")
        listed = await list_experiments(conn)
        later = await experiment_report(conn, "exp", since=T0 + timedelta(minutes=50))

    a, b = stored["arms"]
    assert a["arm"] == "a" and a["requests"] == 100 and a["errors"] == 0
    assert a["latency_p50_ms"] == 50.5  # between the 50th and 51st of 1..100
    assert a["latency_p95_ms"] == 95.05
    assert Decimal(a["cost"]) == Decimal("0.00015") and Decimal(a["price"]) == Decimal("0.0002")
    assert Decimal(a["cost_per_request"]) == Decimal("0.0000015")
    assert (a["input_tokens"], a["output_tokens"]) == (1_000, 400)
    assert b["requests"] == 22 and b["errors"] == 2 and b["error_rate"] == round(2 / 22, 6)
    assert b["latency_p95_ms"] == pytest.approx(28.05)  # failures are not in the latencies
    assert b["output_tokens"] == 80
    for s, lv in zip(stored["arms"], live.report("exp")["arms"], strict=True):
        money = ("cost", "price", "cost_per_request")
        assert {k: v for k, v in s.items() if k not in money} == {
            k: v for k, v in lv.items() if k not in money
        }
        assert all(Decimal(s[k]) == Decimal(lv[k]) for k in money)
    assert listed == {"exp": 122, "other": 1}
    assert sum(arm["requests"] for arm in later["arms"]) == 50 + 0 + 2


async def test_reports_read_the_experiment_index_which_holds_only_experiment_requests(
    engine: AsyncEngine,
) -> None:
    """Requests outside any experiment stay out of the A/B index (they would land at random
    places in it, by latency), and the report's queries still find it, on both databases."""
    rows = [_row(i, "a", 10 + i) for i in range(5)]
    rows += [
        {**_row(i, "x", 1000 + i), "id": f"req_plain_{i}", "experiment": None, "arm": None}
        for i in range(5)
    ]
    async with engine.begin() as conn:
        await conn.execute(requests.insert(), rows)
        if engine.dialect.name == "sqlite":
            index_sql = (
                await conn.exec_driver_sql(
                    "SELECT sql FROM sqlite_master WHERE name = 'ix_requests_experiment_arm_latency'"
                )
            ).scalar_one()
            plan = (
                await conn.exec_driver_sql(
                    "EXPLAIN QUERY PLAN SELECT latency_ms FROM requests WHERE experiment = 'exp' "
                    "AND arm = 'a' AND status < 400 AND latency_ms IS NOT NULL "
                    "ORDER BY latency_ms LIMIT 2 OFFSET 1"
                )
            ).all()
            assert "ix_requests_experiment_arm_latency" in str(plan)
        else:
            index_sql = (
                await conn.exec_driver_sql(
                    "SELECT indexdef FROM pg_indexes "
                    "WHERE indexname = 'ix_requests_experiment_arm_latency'"
                )
            ).scalar_one()
            await conn.exec_driver_sql("SET LOCAL enable_seqscan = off")
            plan = (
                await conn.exec_driver_sql(
                    "EXPLAIN SELECT latency_ms FROM requests WHERE experiment = 'exp' "
                    "AND arm = 'a' AND status < 400 AND latency_ms IS NOT NULL "
                    "ORDER BY latency_ms LIMIT 2 OFFSET 1"
                )
            ).all()
            assert "ix_requests_experiment_arm_latency" in str(plan)
        assert "experiment IS NOT NULL" in index_sql
        report = await experiment_report(conn, "exp")
    assert [arm["requests"] for arm in report["arms"]] == [5]
    assert await _count_experiments(engine) == {"exp": 5}


async def _count_experiments(engine: AsyncEngine) -> dict[str, int]:
    async with engine.connect() as conn:
        return await list_experiments(conn)
