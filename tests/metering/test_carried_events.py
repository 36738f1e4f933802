"""On SQLite a request's usage events ride on its record (metering.derived): what the readers
see, what the rollups count and what a repeat of one is must be as if they were rows."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import func, select

from faregate.auth.principal import Principal
from faregate.billing import repository as billing_repo
from faregate.billing.metrics import BillableMetric
from faregate.billing.periods import Period
from faregate.gateway.call import Call
from faregate.metering import aggregates, derived, rollups
from faregate.metering.journal import Journal
from faregate.metering.recorder import Recorder, build_events, build_request_row, event_parts
from faregate.metering.writer import UsageWriter
from faregate.pricing.cost import CostParts
from faregate.store.db import create_engine
from faregate.store.tables import metadata
from faregate.store.tables.metering import events, requests, usage_rollups
from faregate.usage import Usage
from tests.stored_events import stored_events

HOUR = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


def _call(i: int, *, input_tokens: int = 10, output_tokens: int = 5) -> Call:
    principal = Principal(
        "key_1", "fg_x", external_customer_id="acme", external_subscription_id="sub_1"
    )
    at = HOUR + timedelta(seconds=i)
    call = Call(f"req_{i:04d}", principal, "chat", "m", {}, tags=("t",), created_at=at)
    call.usage = Usage(input_tokens=input_tokens, output_tokens=output_tokens)
    call.cost = Decimal("0.0000375") * (input_tokens + output_tokens)
    call.cost_parts = CostParts(
        input=Decimal("0.0000375") * input_tokens, output=Decimal("0.0000375") * output_tokens
    )
    call.price = Decimal("0.001")
    call.finished = call.started
    return call


async def _setup(tmp_path: Path) -> tuple[Any, UsageWriter]:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}")
    async with engine.begin() as conn:
        await conn.run_sync(metadata.create_all)
        await billing_repo.insert_metric(
            conn,
            {
                "code": "tokens",
                "name": "tokens",
                "aggregation_type": "sum_agg",
                "field_name": "tokens",
                "filters": [{"key": "type", "values": ["input", "output"]}],
            },
        )
    return engine, UsageWriter(engine, tmp_path / "journal")


async def _rolled(engine: Any) -> dict[str, tuple[int, Decimal]]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            select(usage_rollups.c.dims, usage_rollups.c.events_count, usage_rollups.c.value_sum)
        )
        return {dims: (n, Decimal(str(total))) for dims, n, total in rows}


async def _counts(engine: Any) -> tuple[int, int]:
    async with engine.connect() as conn:
        r = (await conn.execute(select(func.count()).select_from(requests))).scalar_one()
        e = (await conn.execute(select(func.count()).select_from(events))).scalar_one()
    return r, e


async def test_a_record_carries_its_events_exactly_and_they_are_rolled_up_once(
    tmp_path: Path,
) -> None:
    engine, writer = await _setup(tmp_path)
    recorder = Recorder(writer)
    calls = [_call(i) for i in range(30)]
    for call in calls:
        recorder.record(call)
    await writer.flush()
    assert await _counts(engine) == (30, 0)  # no event rows: the records carry them
    async with engine.connect() as conn:
        stored = await stored_events(conn)
    built = [e for c in calls for e in build_events(c, "sub_1", "acme")]
    assert len(stored) == len(built) == 90
    # Exactly what was built and rolled up in memory: costs finer than nanos included.
    by_tx = {e["transaction_id"]: e for e in stored}
    for event in built:
        found = by_tx[event["transaction_id"]]
        assert found["properties"] == json.loads(json.dumps(event["properties"]))
        assert found["code"] == event["code"]
        assert found["external_customer_id"] == "acme"
        assert found["timestamp"].replace(tzinfo=UTC) == event["timestamp"]
    assert by_tx["req_0000:tokens:output"]["properties"]["cost"] == "0.0001875"
    assert await _rolled(engine) == {
        '{"type":"input"}': (30, Decimal(300)),
        '{"type":"output"}': (30, Decimal(150)),
    }
    await writer.close()
    await engine.dispose()


async def test_a_replayed_segment_skips_stored_records_and_their_events(tmp_path: Path) -> None:
    engine, writer = await _setup(tmp_path)
    recorder = Recorder(writer)
    for i in range(10):
        recorder.record(_call(i))
    await writer.flush()
    # What a process killed between the commit and the segment's removal leaves behind:
    # the same records once more, and two that were never stored.
    journal = Journal(tmp_path / "journal")
    for i in range(12):
        call = _call(i)
        packed = event_parts(call)
        assert packed is not None
        row = {**build_request_row(call, "sub_1"), "events": orjson.dumps(packed).decode()}
        journal.append({"r": row})
    journal.close()
    replaying = UsageWriter(engine, tmp_path / "journal")
    await replaying.start()
    assert await _counts(engine) == (12, 0)
    assert await _rolled(engine) == {
        '{"type":"input"}': (12, Decimal(120)),
        '{"type":"output"}': (12, Decimal(60)),
    }
    await replaying.close()
    await writer.close()
    await engine.dispose()


def _api_event(tx: str, tokens: int) -> dict[str, Any]:
    """An event sent to the API, of the metric of `_setup`."""
    return {
        "transaction_id": tx,
        "external_subscription_id": "sub_1",
        "external_customer_id": "acme",
        "code": "tokens",
        "timestamp": HOUR,
        "properties": {"type": "input", "tokens": tokens},
        "created_at": HOUR,
        "source": "api",
    }


async def test_an_api_event_repeating_a_requests_event_is_a_duplicate(tmp_path: Path) -> None:
    """Whether its request was stored in an earlier batch or waits in the same one."""
    engine, writer = await _setup(tmp_path)
    recorder = Recorder(writer)
    recorder.record(_call(1))
    await writer.flush()
    recorder.record(_call(2))

    writer.record_events(
        [
            _api_event("req_0001:tokens:input", 1000),  # stored before
            _api_event("req_0002:tokens:input", 1000),  # in this batch
            _api_event("req_0002:other", 7),  # not one of the request's: a new event
            _api_event("req_0003:tokens:input", 7),  # no such request: a new event
        ]
    )
    await writer.flush()
    async with engine.connect() as conn:
        rows = [r[0] for r in await conn.execute(select(events.c.transaction_id))]
    assert sorted(rows) == ["req_0002:other", "req_0003:tokens:input"]
    assert await _rolled(engine) == {
        '{"type":"input"}': (4, Decimal(34)),
        '{"type":"output"}': (2, Decimal(10)),
    }
    await writer.close()
    await engine.dispose()


async def test_an_api_event_stored_before_its_requests_record_is_counted_once(
    tmp_path: Path,
) -> None:
    """The API event came first (its request still running, its id in the response
    headers): the first one stored wins, so the record stops carrying that event, and a
    replay of the record's segment does not bring it back."""
    engine, writer = await _setup(tmp_path)
    writer.record_events([_api_event("req_0001:tokens:input", 1000)])
    await writer.flush()
    recorder = Recorder(writer)
    recorder.record(_call(1))
    recorder.record(_call(2))
    await writer.flush()
    assert await _rolled(engine) == {
        '{"type":"input"}': (2, Decimal(1010)),  # the API event's 1000, req_0002's 10
        '{"type":"output"}': (2, Decimal(10)),
    }
    async with engine.connect() as conn:
        stored = {e["transaction_id"]: e for e in await stored_events(conn)}
        carried = (
            await conn.execute(select(requests.c.events).where(requests.c.id == "req_0001"))
        ).scalar_one()
    assert stored["req_0001:tokens:input"]["properties"]["tokens"] == 1000
    assert sorted(stored) == [  # each request's event once, the API's one row among them
        "req_0001:requests",
        "req_0001:tokens:input",
        "req_0001:tokens:output",
        "req_0002:requests",
        "req_0002:tokens:input",
        "req_0002:tokens:output",
    ]
    assert "input" not in carried  # the record carries the rest of its events only
    assert "output" in carried
    # A process killed with req_0003's record journaled, not stored, after an API event
    # naming it was: the process that replays the segment never saw the API event.
    writer.record_events([_api_event("req_0003:tokens:input", 500)])
    await writer.flush()
    await writer.close()
    journal = Journal(tmp_path / "journal-2")
    call = _call(3)
    row = build_request_row(call, "sub_1")
    row["events"] = orjson.dumps(event_parts(call)).decode()
    journal.append({"r": row})
    journal.close()
    replaying = UsageWriter(engine, tmp_path / "journal-2")
    assert await replaying.recover() == 1
    assert await _rolled(engine) == {
        '{"type":"input"}': (3, Decimal(1510)),
        '{"type":"output"}': (3, Decimal(15)),
    }
    await replaying.close()
    await engine.dispose()


async def test_an_api_event_of_another_subscription_is_no_repeat_of_a_requests_event(
    tmp_path: Path,
) -> None:
    """A transaction id is unique within a subscription: an API event of sub_2 that names
    req_0001 leaves the event req_0001 made for sub_1 carried by its record and counted."""
    engine, writer = await _setup(tmp_path)
    writer.record_events(
        [{**_api_event("req_0001:tokens:input", 1000), "external_subscription_id": "sub_2"}]
    )
    await writer.flush()
    Recorder(writer).record(_call(1))
    await writer.flush()
    async with engine.connect() as conn:
        carried = (
            await conn.execute(select(requests.c.events).where(requests.c.id == "req_0001"))
        ).scalar_one()
        sums = {
            (sub, dims): (n, Decimal(str(total)))
            for sub, dims, n, total in await conn.execute(
                select(
                    usage_rollups.c.external_subscription_id,
                    usage_rollups.c.dims,
                    usage_rollups.c.events_count,
                    usage_rollups.c.value_sum,
                )
            )
        }
    assert "input" in carried
    assert sums == {
        ("sub_1", '{"type":"input"}'): (1, Decimal(10)),
        ("sub_1", '{"type":"output"}'): (1, Decimal(5)),
        ("sub_2", '{"type":"input"}'): (1, Decimal(1000)),
    }
    await writer.close()
    await engine.dispose()


async def test_readers_by_transaction_by_period_and_a_rebuild_see_carried_events(
    tmp_path: Path,
) -> None:
    engine, writer = await _setup(tmp_path)
    recorder = Recorder(writer)
    for i in range(5):
        recorder.record(_call(i, input_tokens=10 + i))
    await writer.flush()
    async with engine.begin() as conn:
        found = await billing_repo.events_by_transaction_id(conn, "req_0003:tokens:input")
        assert [(e["code"], e["properties"]["tokens"]) for e in found] == [("tokens", 13)]
        assert await billing_repo.events_by_transaction_id(conn, "req_0003:tokens:x") == []
        assert await billing_repo.events_by_transaction_id(conn, "req_0003:requests", "sub_2") == []
        carried = await derived.of_subscription(
            conn, "sub_1", "tokens", HOUR + timedelta(seconds=1), HOUR + timedelta(seconds=3)
        )
        assert sorted(e["transaction_id"] for e in carried) == [
            "req_0001:tokens:input",
            "req_0001:tokens:output",
            "req_0002:tokens:input",
            "req_0002:tokens:output",
        ]
        # A metric made after the events (or changed) is rolled up from them again.
        metric = BillableMetric.from_dict(
            {"code": "tokens", "name": "t", "aggregation_type": "count_agg", "filters": []}
        )
        await rollups.rebuild(conn, metric)
        counted = await conn.execute(select(func.sum(usage_rollups.c.events_count)))
        assert counted.scalar_one() == 10
        # The tail of a usage read: events the writer still holds that are stored count once.
        tail = build_events(_call(4, input_tokens=14), "sub_1", "acme")
        assert await aggregates._not_stored(conn, "sub_1", tail) == []
        fresh = build_events(_call(9), "sub_1", "acme")
        assert len(await aggregates._not_stored(conn, "sub_1", fresh)) == 3
        period = Period.of(HOUR, HOUR + timedelta(hours=1))
        raw = await aggregates._raw_events(conn, "sub_1", metric, period, [])
        assert len(raw) == 10
    await writer.close()
    await engine.dispose()


async def test_before_a_flush_the_tail_counts_a_requests_event_over_an_api_repeat(
    tmp_path: Path,
) -> None:
    """What a usage read adds before the flush is what the flush will store."""
    engine, writer = await _setup(tmp_path)
    Recorder(writer).record(_call(1))
    repeat = {
        **build_events(_call(1), "sub_1", "acme")[1],
        "properties": {"type": "input", "tokens": 1000},
        "source": "api",
    }
    writer.record_events([repeat])
    async with engine.connect() as conn:
        tail = await aggregates._not_stored(conn, "sub_1", writer.unflushed_events("sub_1"))
    tokens = {e["transaction_id"]: e["properties"]["tokens"] for e in tail if e["code"] == "tokens"}
    assert tokens == {"req_0001:tokens:input": 10, "req_0001:tokens:output": 5}
    await writer.flush()
    assert await _rolled(engine) == {
        '{"type":"input"}': (1, Decimal(10)),
        '{"type":"output"}': (1, Decimal(5)),
    }
    await writer.close()
    await engine.dispose()


async def test_a_flush_rolls_its_records_up_a_slice_at_a_time_letting_requests_run(
    tmp_path: Path, monkeypatch: Any
) -> None:
    """A flush's roll-up runs on the event loop: in slices (16 records, or a quarter of the
    batch), with a turn of the loop between them, and it adds up to the whole batch's."""
    engine, writer = await _setup(tmp_path)
    recorder = Recorder(writer)
    slices: list[int] = []
    turns: list[int] = []  # the slices rolled up when another task got a turn
    accumulate = rollups.accumulate_carried

    def counted(cells: Any, specs: Any, records: Any, memos: Any = None) -> None:
        slices.append(len(records))
        accumulate(cells, specs, records, memos)

    async def other_task() -> None:
        while not flushed.done():
            turns.append(len(slices))
            await asyncio.sleep(0)

    monkeypatch.setattr(rollups, "accumulate_carried", counted)
    for call in [_call(i) for i in range(80)]:
        recorder.record(call)
    flushed = asyncio.ensure_future(writer.flush())
    await other_task()
    await flushed
    assert slices == [20, 20, 20, 20]
    assert {1, 2, 3} <= set(turns)  # the loop turned between the slices
    assert await _rolled(engine) == {
        '{"type":"input"}': (80, Decimal(800)),
        '{"type":"output"}': (80, Decimal(400)),
    }
    await writer.close()
    await engine.dispose()
