"""Spend anomalies from the request records: a day over N x its trailing average raises one
`spend.anomaly` alert per scope, value and day, on SQLite and PostgreSQL."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from faregate.alerts import Alerts
from faregate.config import ConfigError
from faregate.metering.anomaly import AnomalyConfig, SpendMonitor
from faregate.money import to_nanos
from faregate.store.counters import MemoryCounterStore
from faregate.store.db import create_engine
from faregate.store.tables.metering import requests
from tests.conftest import create_pg_database, drop_pg_database, migrated

NOW = datetime(2026, 11, 22, 15, 0, tzinfo=UTC)


class Webhooks:
    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    async def emit(self, webhook_type: str, object_type: str, obj: dict[str, Any]) -> None:
        self.sent.append(obj)


@pytest.fixture(params=["sqlite", "postgres"])
async def engine(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    pg = request.param == "postgres"
    url = await create_pg_database() if pg else f"sqlite+aiosqlite:///{tmp_path / 'a.db'}"
    await migrated(url)
    engine = create_engine(url)
    yield engine
    await engine.dispose()
    if pg:
        await drop_pg_database(url)


async def _spend(engine: AsyncEngine, when: datetime, cost: str, customer: str) -> None:
    async with engine.begin() as conn:
        await conn.execute(
            requests.insert().values(
                id=uuid.uuid4().hex,
                created_at=when,
                kind="chat",
                status=200,
                tags=[],
                external_customer_id=customer,
                cost_nanos=to_nanos(Decimal(cost)),
                price_nanos=to_nanos(Decimal(cost) * 2),
            )
        )


async def _history(engine: AsyncEngine) -> None:
    for days_ago in range(1, 8):
        await _spend(engine, NOW - timedelta(days=days_ago), "1.00", "steady")
        await _spend(engine, NOW - timedelta(days=days_ago), "1.00", "spiky")
    await _spend(engine, NOW - timedelta(hours=2), "1.50", "steady")  # 1.5x: normal
    await _spend(engine, NOW - timedelta(hours=2), "2.00", "spiky")
    await _spend(engine, NOW - timedelta(hours=1), "2.00", "spiky")  # 4x the average
    await _spend(engine, NOW - timedelta(hours=1), "0.50", "newcomer")  # no history yet


async def test_a_day_over_n_times_its_trailing_average_alerts_once(engine: AsyncEngine) -> None:
    await _history(engine)
    hooks = Webhooks()
    alerts = Alerts(hooks, MemoryCounterStore(), clock=lambda: NOW)
    config = AnomalyConfig.parse({"factor": 3, "trailing_days": 7, "by": ["customer", "total"]})
    assert config is not None
    monitor = SpendMonitor(engine, alerts, config, clock=lambda: NOW)
    raised = await monitor.check()
    assert [(a.scope, a.value) for a in raised] == [("customer", "spiky")]
    assert hooks.sent == [
        {
            "alert_type": "spend.anomaly",
            "triggered_at": NOW.isoformat(),
            "scope": "customer",
            "value": "spiky",
            "day": "2026-11-22",
            "basis": "cost",
            "spent": "4",
            "trailing_average": "1",
            "ratio": "4",
            "factor": "3",
        }
    ]
    assert await monitor.check() == [] and len(hooks.sent) == 1  # once per day


async def test_min_spend_and_basis_are_honoured(engine: AsyncEngine) -> None:
    await _history(engine)
    hooks = Webhooks()
    alerts = Alerts(hooks, MemoryCounterStore())
    quiet = AnomalyConfig.parse({"by": "customer", "min_spend": "5"})
    assert quiet is not None
    assert await SpendMonitor(engine, alerts, quiet, clock=lambda: NOW).check() == []
    priced = AnomalyConfig.parse({"by": "customer", "basis": "price", "min_spend": "5"})
    assert priced is not None
    [anomaly] = await SpendMonitor(engine, alerts, priced, clock=lambda: NOW).check()
    assert anomaly.spent == Decimal(8) and anomaly.average == Decimal(2)


@pytest.mark.parametrize(
    "section", [{"by": ["day"]}, {"factor": 1}, {"basis": "vibes"}, {"trailing_days": 0}]
)
def test_bad_anomaly_settings_are_config_errors(section: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        AnomalyConfig.parse(section)


def test_no_section_means_no_monitor() -> None:
    assert AnomalyConfig.parse(None) is None
    assert AnomalyConfig.parse({"enabled": False}) is None
