"""The usage writer: batched, idempotent, and durable across a process that dies."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from faregate.billing import repository as billing_repo
from faregate.metering import rollups
from faregate.metering.journal import Journal
from faregate.metering.writer import UsageWriter
from faregate.store.db import create_engine
from faregate.store.tables import metadata
from faregate.store.tables.metering import events, requests, usage_rollups


def _request(i: int) -> dict:
    return {
        "id": f"req_{i}",
        "created_at": datetime.now(UTC),
        "kind": "chat",
        "status": 200,
        "tags": [],
        "input_tokens": 3,
        "output_tokens": 5,
    }


def _event(i: int) -> dict:
    now = datetime.now(UTC)
    return {
        "transaction_id": f"req_{i}:tokens:input",
        "external_subscription_id": "sub_1",
        "code": "tokens",
        "timestamp": now,
        "properties": {"tokens": 3},
        "created_at": now,
        "source": "gateway",
    }


async def _engine(tmp_path: Path):
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}")
    async with engine.begin() as conn:
        await conn.run_sync(metadata.create_all)
    return engine


async def _counts(engine) -> tuple[int, int]:
    async with engine.connect() as conn:
        r = (await conn.execute(select(func.count()).select_from(requests))).scalar_one()
        e = (await conn.execute(select(func.count()).select_from(events))).scalar_one()
    return r, e


async def test_flush_writes_records_and_events_and_empties_the_journal(tmp_path: Path) -> None:
    engine = await _engine(tmp_path)
    writer = UsageWriter(engine, tmp_path / "journal")
    await writer.start()
    for i in range(50):
        writer.record(_request(i), [_event(i)])
    await writer.flush()
    assert await _counts(engine) == (50, 50)
    await writer.close()
    assert list((tmp_path / "journal").glob("*.jsonl")) == []
    await engine.dispose()


async def test_records_left_in_the_journal_by_a_dead_process_are_replayed_once(
    tmp_path: Path,
) -> None:
    engine = await _engine(tmp_path)
    journal = Journal(tmp_path / "journal")  # what a killed process leaves: records, no flush
    for i in range(10):
        journal.append({"r": _request(i), "e": [_event(i)]})
    # A replayed record already in the database is not counted twice.
    writer = UsageWriter(engine, tmp_path / "journal")
    await writer._insert([_request(0)], [_event(0)], [])
    await writer.start()
    assert await _counts(engine) == (10, 10)
    await writer.close()
    await engine.dispose()


async def test_a_failed_flush_keeps_its_segment_and_the_next_flush_stores_it_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = await _engine(tmp_path)
    writer = UsageWriter(engine, tmp_path / "journal")
    await writer.start()
    for i in range(40):
        writer.record(_request(i), [_event(i)])

    async def down(*batch: Any) -> None:
        raise OSError("database unavailable")

    with monkeypatch.context() as patch:
        patch.setattr(writer, "_insert_once", down)
        with pytest.raises(OSError):
            await writer.flush()
    assert len(writer._journal.leftovers()) == 1  # sealed, released, still on disk
    writer.record(_request(40), [_event(40)])
    await writer.flush()
    assert await _counts(engine) == (41, 41)
    assert writer._journal.leftovers() == []
    await writer.close()
    await engine.dispose()


def test_a_torn_last_line_is_ignored(tmp_path: Path) -> None:
    path = tmp_path / "000000000001.jsonl"
    path.write_bytes(b'{"e": []}\n{"r": {"id": "x"')
    assert list(Journal.read(path)) == [{"e": []}]


async def _rollups(engine) -> dict[tuple[str, str], int]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            select(usage_rollups.c.code, usage_rollups.c.dims, usage_rollups.c.events_count)
        )
        return {(code, dims): n for code, dims, n in rows}


def _metric(code: str, keys: list[str]) -> dict:
    return {
        "code": code,
        "name": code,
        "aggregation_type": "count_agg",
        "filters": [{"key": k, "values": ["a", "b"]} for k in keys],
    }


async def test_a_metric_created_or_changed_after_a_flush_is_rolled_up_by_the_next_one(
    tmp_path: Path,
) -> None:
    engine = await _engine(tmp_path)
    writer = UsageWriter(engine, tmp_path / "journal")

    def event(tx: str, code: str) -> dict:
        return {**_event(0), "transaction_id": tx, "code": code, "properties": {"model": "a"}}

    writer.record_events([event("t1", "calls")])
    await writer.flush()  # no metric yet: nothing rolled up
    assert await _rollups(engine) == {}
    async with engine.begin() as conn:
        await billing_repo.insert_metric(conn, _metric("calls", []))  # rolls up t1
    writer.record_events([event("t2", "calls")])
    await writer.flush()
    assert await _rollups(engine) == {("calls", "{}"): 2}
    async with engine.begin() as conn:
        row = await billing_repo.metric_by_code(conn, "calls")
        await billing_repo.update_metric_definition(conn, row["id"], _metric("calls", ["model"]))
    writer.record_events([event("t3", "calls")])
    await writer.flush()
    assert await _rollups(engine) == {("calls", '{"model":"a"}'): 3}
    await writer.close()
    await engine.dispose()


async def test_unchanged_metric_definitions_reuse_their_specs(tmp_path: Path) -> None:
    engine = await _engine(tmp_path)
    specs = rollups.MetricSpecs()
    async with engine.begin() as conn:
        await billing_repo.insert_metric(conn, _metric("calls", ["model"]))
        first = await specs.read(conn)
        assert await specs.read(conn) is first
        await billing_repo.insert_metric(conn, _metric("other", []))
        second = await specs.read(conn)
    assert set(first) == {"calls"} and set(second) == {"calls", "other"}
    await engine.dispose()
