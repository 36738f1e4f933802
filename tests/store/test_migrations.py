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


async def test_wallet_rates_stored_as_floats_on_sqlite_become_exact_text(tmp_path: Path) -> None:
    """0008: the wallets table is rebuilt with the rate as text; the rows keep their rate, and
    the partial unique index keeps its condition (two terminated credit-limit wallets)."""
    from sqlalchemy import text

    url = f"sqlite+aiosqlite:///{tmp_path / 'm.db'}"
    await asyncio.to_thread(migrate, url, "0007_ledger_partial_indexes")
    engine = create_engine(url)
    columns = (
        "id, customer_id, external_customer_id, currency, rate_amount, code, status, priority, "
        "recurring_transaction_rules, metadata, funded_nanos, funded_version, consumed_nanos, "
        "held_nanos, created_at, updated_at"
    )
    async with engine.begin() as conn:
        for i, rate in enumerate([1.25, 0.5]):
            await conn.execute(
                text(
                    f"INSERT INTO wallets ({columns}) VALUES (:id, 'c', 'acme', 'USD', :rate, "
                    "'credit_limit', 'terminated', 50, '[]', '{}', 0, 0, 0, 0, '2026-01-01', "
                    "'2026-01-01')"
                ),
                {"id": f"w{i}", "rate": rate},
            )
    await engine.dispose()
    await asyncio.to_thread(migrate, url)
    engine = create_engine(url)
    async with engine.begin() as conn:
        rows = (
            await conn.execute(text("SELECT rate_amount, typeof(rate_amount) FROM wallets"))
        ).all()
        assert sorted(rows) == [("0.5", "text"), ("1.25", "text")]
        index = await conn.scalar(
            text("SELECT sql FROM sqlite_master WHERE name = 'ux_wallets_customer_credit_limit'")
        )
        assert "WHERE" in index and "credit_limit" in index
    await engine.dispose()


async def test_event_amounts_stored_as_floats_on_sqlite_become_exact_text(tmp_path: Path) -> None:
    """0009: the events table is rebuilt with precise_total_amount_cents as text; the rows
    keep their amounts, and the unique transaction id and the billing index stay."""
    from sqlalchemy import text

    url = f"sqlite+aiosqlite:///{tmp_path / 'm.db'}"
    await asyncio.to_thread(migrate, url, "0008_exact_wallet_rates")
    engine = create_engine(url)
    insert = text(
        "INSERT INTO events (transaction_id, external_subscription_id, code, timestamp, "
        "properties, precise_total_amount_cents, source, created_at) VALUES (:tx, 'sub', "
        "'tokens', '2026-01-01', '{}', :amount, 'api', '2026-01-01')"
    )
    async with engine.begin() as conn:
        for tx, amount in [("a", "0.1"), ("b", "12.5"), ("c", None), ("d", "7")]:
            await conn.execute(insert, {"tx": tx, "amount": amount})
        kinds = await conn.execute(text("SELECT typeof(precise_total_amount_cents) FROM events"))
        assert sorted(kinds.scalars()) == ["integer", "null", "real", "real"]
    await engine.dispose()
    await asyncio.to_thread(migrate, url)
    engine = create_engine(url)
    async with engine.begin() as conn:
        rows = await conn.execute(
            text("SELECT transaction_id, precise_total_amount_cents FROM events")
        )
        assert sorted(rows.all()) == [("a", "0.1"), ("b", "12.5"), ("c", None), ("d", "7")]
        indexes = await conn.execute(
            text("SELECT name FROM sqlite_master WHERE tbl_name = 'events' AND type = 'index'")
        )
        assert "ix_events_billing_lookup" in set(indexes.scalars())
        with pytest.raises(Exception, match="UNIQUE"):
            await conn.execute(insert, {"tx": "a", "amount": "1"})
    await engine.dispose()


async def test_a_metrics_aggregation_type_column_is_set_from_its_definition(
    tmp_path: Path,
) -> None:
    """0010: a metric updated to another aggregation type kept the old one in its column."""
    from sqlalchemy import text

    url = f"sqlite+aiosqlite:///{tmp_path / 'm.db'}"
    await asyncio.to_thread(migrate, url, "0009_exact_event_amounts")
    engine = create_engine(url)
    insert = text(
        "INSERT INTO billable_metrics (id, code, name, aggregation_type, definition, created_at) "
        "VALUES (:id, :id, :id, 'sum_agg', :definition, '2026-01-01')"
    )
    async with engine.begin() as conn:
        for metric_id, kind in (("updated", "max_agg"), ("same", "sum_agg")):
            await conn.execute(
                insert, {"id": metric_id, "definition": f'{{"aggregation_type": "{kind}"}}'}
            )
    await engine.dispose()
    await asyncio.to_thread(migrate, url)
    engine = create_engine(url)
    async with engine.begin() as conn:
        rows = await conn.execute(text("SELECT id, aggregation_type FROM billable_metrics"))
        assert sorted(rows.all()) == [("same", "sum_agg"), ("updated", "max_agg")]
    await engine.dispose()


async def test_a_stored_rounding_precision_is_brought_within_its_bound(tmp_path: Path) -> None:
    """0011: a metric stored with a precision faregate now refuses would no longer load."""
    import json

    from sqlalchemy import text

    url = f"sqlite+aiosqlite:///{tmp_path / 'm.db'}"
    await asyncio.to_thread(migrate, url, "0010_metric_aggregation_type")
    engine = create_engine(url)
    insert = text(
        "INSERT INTO billable_metrics (id, code, name, aggregation_type, definition, created_at) "
        "VALUES (:id, :id, :id, 'count_agg', :definition, '2026-01-01')"
    )
    stored = {"none": None, "two": 2, "huge": 10**5, "low": -25, "lowest": -24}
    async with engine.begin() as conn:
        for metric_id, precision in stored.items():
            definition = {"aggregation_type": "count_agg", "rounding_precision": precision}
            await conn.execute(insert, {"id": metric_id, "definition": json.dumps(definition)})
    await engine.dispose()
    await asyncio.to_thread(migrate, url)
    engine = create_engine(url)
    async with engine.begin() as conn:
        rows = await conn.execute(text("SELECT id, definition FROM billable_metrics"))
        after = {i: json.loads(d)["rounding_precision"] for i, d in rows.all()}
    await engine.dispose()
    assert after == {"none": None, "two": 2, "huge": 24, "low": -24, "lowest": -24}


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
async def test_future_subscriptions_become_pending_and_terminated_ones_canceled(
    backend: str, tmp_path: Path
) -> None:
    """0013: a future subscription stored active becomes pending; one terminated before it
    started (an ending_at before its start, which every billing run failed on) canceled."""
    from datetime import UTC, datetime, timedelta

    from sqlalchemy import text

    url = f"sqlite+aiosqlite:///{tmp_path / 'm.db'}"
    if backend == "postgres":
        url = await create_pg_database()
    try:
        await asyncio.to_thread(migrate, url, "0012_customer_currency_optional")
        await asyncio.to_thread(migrate, url, "0004_billing_lifecycle")
        now = datetime.now(UTC).replace(tzinfo=None) if backend == "sqlite" else datetime.now(UTC)
        later, earlier = now + timedelta(days=10), now - timedelta(days=10)
        rows = {
            "future": ("active", later, None, None),
            "stopped": ("terminated", later, now, now),
            "ended": ("terminated", earlier, now, now),
            "running": ("active", earlier, None, None),
        }
        engine = create_engine(url)
        async with engine.begin() as conn:
            for sub_id, (status, start, ending, terminated) in rows.items():
                await conn.execute(
                    text(
                        "INSERT INTO subscriptions (id, external_id, external_customer_id,"
                        " plan_code, status, billing_time, subscription_at, ending_at,"
                        " terminated_at, created_at) VALUES (:id, :id, 'c', 'p', :status,"
                        " 'calendar', :start, :ending, :terminated, :start)"
                    ),
                    {
                        "id": sub_id,
                        "status": status,
                        "start": start,
                        "ending": ending,
                        "terminated": terminated,
                    },
                )
        await engine.dispose()
        await asyncio.to_thread(migrate, url)
        engine = create_engine(url)
        async with engine.begin() as conn:
            found = await conn.execute(
                text("SELECT id, status, ending_at IS NULL FROM subscriptions")
            )
            after = {i: (s, bool(n)) for i, s, n in found.all()}
        await engine.dispose()
        assert after == {
            "future": ("pending", True),
            "stopped": ("canceled", True),
            "ended": ("terminated", False),
            "running": ("active", True),
        }
    finally:
        if backend == "postgres":
            await drop_pg_database(url)


def test_the_migrations_since_0013_have_one_head() -> None:
    """0013 joined the branches up to it; every later migration goes on top of the last one
    (two heads after it would be two schemas, each missing the other's changes)."""
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    from faregate.store.db import MIGRATIONS_DIR

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    script = ScriptDirectory.from_config(config)
    after_0013 = [
        head
        for head in script.get_heads()
        if "0013_pending_subscriptions" in {r.revision for r in script.walk_revisions("base", head)}
    ]
    assert len(after_0013) == 1, after_0013


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
async def test_a_terminated_subscriptions_external_id_may_be_taken_again(
    backend: str, tmp_path: Path
) -> None:
    """0014: external_id is unique among live (pending or active) subscriptions only; the
    rows stored before are kept."""
    from sqlalchemy import text
    from sqlalchemy.exc import IntegrityError

    url = f"sqlite+aiosqlite:///{tmp_path / 'm.db'}"
    if backend == "postgres":
        url = await create_pg_database()
    insert = text(
        "INSERT INTO subscriptions (id, external_id, external_customer_id, plan_code, status,"
        " billing_time, subscription_at, created_at) VALUES (:id, 'sub', 'c', 'p', :status,"
        " 'calendar', '2026-01-01', '2026-01-01')"
    )
    try:
        await asyncio.to_thread(migrate, url, "0013_pending_subscriptions")
        engine = create_engine(url)
        async with engine.begin() as conn:
            await conn.execute(insert, {"id": "old", "status": "terminated"})
        await engine.dispose()
        await asyncio.to_thread(migrate, url)
        engine = create_engine(url)
        async with engine.begin() as conn:
            await conn.execute(insert, {"id": "gone", "status": "canceled"})
            await conn.execute(insert, {"id": "new", "status": "active"})
        with pytest.raises(IntegrityError):
            async with engine.begin() as conn:
                await conn.execute(insert, {"id": "twin", "status": "pending"})
        async with engine.connect() as conn:
            ids = await conn.execute(text("SELECT id FROM subscriptions ORDER BY id"))
            assert list(ids.scalars()) == ["gone", "new", "old"]
        await engine.dispose()
    finally:
        if backend == "postgres":
            await drop_pg_database(url)
