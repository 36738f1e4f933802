"""Usage read from rollups (plus the writer's unwritten tail) equals the same usage aggregated
from the raw events, for every aggregation type, any filters, repeats and batch splits."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from faregate.billing import repository as repo
from faregate.billing.charges import charge_aggregates
from faregate.billing.events import Event
from faregate.billing.metrics import BillableMetric
from faregate.billing.periods import Period
from faregate.billing.plans import Charge, Plan
from faregate.metering import rollups
from faregate.metering.aggregates import period_aggregates
from faregate.metering.writer import UsageWriter
from faregate.store.db import create_engine, migrate
from tests.conftest import create_pg_database, drop_pg_database

START = datetime(2026, 3, 1, tzinfo=UTC)
PERIOD = Period.of(START, datetime(2026, 4, 1, tzinfo=UTC))
FIRST = START - timedelta(days=9)  # events run from before the period to after it
SPAN = int((PERIOD.end + timedelta(days=4) - FIRST).total_seconds())
KINDS = ["count_agg", "sum_agg", "max_agg", "latest_agg", "unique_count_agg", "weighted_sum_agg"]
FILTERS = [{"model": ["a"]}, {"model": ["a", "b"], "type": ["x"]}, {"type": ["y"]}]

values = st.one_of(
    st.none(),
    st.integers(-50, 10_000),
    st.decimals(min_value=-100, max_value=100, places=3, allow_nan=False).map(str),
)
events = st.lists(
    st.fixed_dictionaries(
        {
            "tx": st.integers(0, 25),  # repeats: the first one accepted wins
            "at": st.integers(0, SPAN * 1_000_000),
            "model": st.sampled_from(["a", "b", "c", None]),
            "type": st.sampled_from(["x", "y", None]),
            "v": values,
            "user": st.sampled_from(["u1", "u2", "u3", None]),
            "op": st.sampled_from(["add", "add", "remove"]),
        }
    ),
    max_size=40,
    unique_by=lambda e: e["at"],  # latest_agg ties across rollup rows are not ordered
)
cases = st.fixed_dictionaries(
    {
        "events": events,
        "filters": st.lists(st.sampled_from(range(len(FILTERS))), unique=True),
        "batches": st.lists(st.integers(0, 40), max_size=3),  # split points; the rest is tail
        "recurring": st.booleans(),
        "rounding": st.sampled_from([None, "round", "ceil", "floor"]),
        # When an earlier subscription of the external_id ended: on an hour, or within one.
        "since": st.one_of(
            st.none(),
            st.integers(0, int((START - FIRST).total_seconds()) // 3600).map(
                lambda h: FIRST + timedelta(hours=h)
            ),
            st.integers(0, int((START - FIRST).total_seconds()) * 1_000_000).map(
                lambda us: FIRST + timedelta(microseconds=us)
            ),
        ),
    }
)


def _metric(kind: str, case: dict[str, Any]) -> BillableMetric:
    recurring = case["recurring"] and kind in ("sum_agg", "unique_count_agg", "weighted_sum_agg")
    return BillableMetric.from_dict(
        {
            "code": "m" + uuid.uuid4().hex[:10],
            "name": "m",
            "aggregation_type": kind,
            "field_name": "user" if kind == "unique_count_agg" else "v",
            "recurring": recurring,
            "rounding_function": case["rounding"],
            "rounding_precision": 1,
            "filters": [
                {"key": "model", "values": ["a", "b", "c"]},
                {"key": "type", "values": ["x", "y"]},
            ],
        }
    )


def _rows(case: dict[str, Any], metric: BillableMetric, sub: str) -> list[dict[str, Any]]:
    rows = []
    for e in case["events"]:
        props = {k: e[k] for k in ("model", "type", "v", "user") if e[k] is not None}
        props["operation_type"] = e["op"]
        ts = FIRST + timedelta(microseconds=e["at"])
        rows.append(
            {
                "transaction_id": f"t{e['tx']}",
                "external_subscription_id": sub,
                "code": metric.code,
                "timestamp": ts,
                "properties": props,
                "source": "api",
                "created_at": ts,
            }
        )
    return rows


def _expected(
    charge: Charge, metric: BillableMetric, rows: list[dict[str, Any]], since: datetime | None
) -> dict:
    first: dict[str, dict[str, Any]] = {}
    for row in rows:
        first.setdefault(row["transaction_id"], row)
    stored = [
        Event(r["transaction_id"], r["code"], r["timestamp"], r["properties"])
        for r in first.values()
        if since is None or r["timestamp"] >= since  # before: the earlier subscription's
    ]
    carried = None
    earlier = [e for e in stored if e.timestamp < PERIOD.start]
    if metric.recurring and earlier:
        since = min(e.timestamp for e in earlier)
        carried = charge_aggregates(
            charge, metric, earlier, Period.of(since, PERIOD.start), rounded=False
        )
    inside = [e for e in stored if PERIOD.start <= e.timestamp < PERIOD.end]
    return charge_aggregates(charge, metric, inside, PERIOD, carried=carried)


def _shape(aggregates: dict) -> dict:
    return {
        k: (a.units, a.event_count, a.total_aggregated_units, a.latest_at)
        for k, a in aggregates.items()
    }


async def _check(engine: Any, writer: UsageWriter, kind: str, case: dict[str, Any]) -> None:
    metric = _metric(kind, case)
    async with engine.begin() as conn:
        await repo.insert_metric(
            conn,
            {
                "code": metric.code,
                "name": metric.name,
                "aggregation_type": kind,
                "field_name": metric.field_name,
                "recurring": metric.recurring,
                "rounding_function": metric.rounding_function,
                "rounding_precision": 1,
                "filters": [{"key": f.key, "values": list(f.values)} for f in metric.filters],
            },
        )
    charge = Charge.from_dict(
        {
            "billable_metric_code": metric.code,
            "charge_model": "standard",
            "properties": {"amount": "1"},
            "filters": [
                {"values": FILTERS[i], "properties": {"amount": "2"}} for i in case["filters"]
            ],
        }
    )
    plan = Plan(
        code="p",
        name="p",
        interval="monthly",
        amount_cents=0,
        amount_currency="USD",
        charges=(charge,),
    )
    sub = "s" + uuid.uuid4().hex[:10]
    rows = _rows(case, metric, sub)
    written = 0
    for cut in sorted(case["batches"]):
        if cut > written:
            writer.record_events(rows[written:cut])
            await writer.flush()
            written = cut
    tail = rows[written:]
    async with engine.connect() as conn:
        got = await period_aggregates(
            conn, plan, {metric.code: metric}, sub, PERIOD, unflushed=tail, since=case["since"]
        )
    assert _shape(got) == _shape(_expected(charge, metric, rows, case["since"]))


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
@pytest.mark.parametrize("kind", KINDS)
def test_usage_from_rollups_equals_usage_from_raw_events(
    kind: str, backend: str, tmp_path: Path
) -> None:
    with asyncio.Runner() as runner:
        if backend == "postgres":
            url = runner.run(create_pg_database())
        else:
            url = f"sqlite+aiosqlite:///{tmp_path / 'r.db'}"
        migrate(url)
        engine = create_engine(url)
        writer = UsageWriter(engine, tmp_path / "journal")
        examples = 40 if backend == "sqlite" else 20

        @settings(
            max_examples=examples,
            deadline=None,
            suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
        )
        @given(case=cases)
        # A transaction repeated after the external_id's earlier holder ended: the first is
        # the one stored, so neither counts (the tail was filtered before it was deduped).
        @example(
            case={
                "events": [
                    {
                        "tx": 0,
                        "at": 0,
                        "model": "a",
                        "type": "x",
                        "v": None,
                        "user": "u1",
                        "op": "add",
                    },
                    {
                        "tx": 0,
                        "at": 777_600_000_000,
                        "model": "a",
                        "type": "x",
                        "v": 0,
                        "user": "u1",
                        "op": "add",
                    },
                ],
                "filters": [],
                "batches": [],
                "recurring": False,
                "rounding": None,
                "since": FIRST + timedelta(hours=1),
            }
        )
        def check(case: dict[str, Any]) -> None:
            runner.run(_check(engine, writer, kind, case))

        try:
            check()
        finally:
            runner.run(writer.close())
            runner.run(engine.dispose())
            if backend == "postgres":
                runner.run(drop_pg_database(url))


def test_metrics_filtering_on_different_keys_keep_their_own_dims_for_equal_values() -> None:
    specs = {
        "a": rollups.MetricSpec("a", "count_agg", None, ("model", "provider")),
        "b": rollups.MetricSpec("b", "count_agg", None, ("model", "team")),
    }
    rows = [
        {
            "code": code,
            "timestamp": START,
            "external_subscription_id": "s",
            "properties": {"model": "m", key: "x"},
        }
        for code, key in (("a", "provider"), ("b", "team"))
    ]
    cells: dict[rollups.RollupKey, rollups.Cell] = {}
    rollups.accumulate(cells, specs, rows)
    assert sorted((code, dims) for _, code, dims, _ in cells) == [
        ("a", '{"model":"m","provider":"x"}'),
        ("b", '{"model":"m","team":"x"}'),
    ]


def test_accumulate_puts_each_event_in_its_own_hour_whatever_the_order_and_zone() -> None:
    """The hour of the event before is reused only while events stay inside it."""
    spec = rollups.MetricSpec("tokens", "sum_agg", "tokens", ())
    plus2 = timezone(timedelta(hours=2))
    stamps = [
        datetime(2026, 3, 1, 10, 59, 59, 999999, tzinfo=UTC),
        datetime(2026, 3, 1, 11, 0, tzinfo=UTC),  # the next hour
        datetime(2026, 3, 1, 10, 30, tzinfo=UTC),  # back to the one before
        datetime(2026, 3, 1, 13, 15, tzinfo=plus2),  # 11:15 UTC, another zone
        datetime(2026, 3, 1, 11, 45, tzinfo=UTC),
    ]
    rows = [
        {
            "code": "tokens",
            "external_subscription_id": "s",
            "timestamp": ts,
            "properties": {"tokens": i + 1},
        }
        for i, ts in enumerate(stamps)
    ]
    cells: dict[Any, rollups.Cell] = {}
    rollups.accumulate(cells, {"tokens": spec}, rows)
    sums = {key[3]: (cell.events, cell.sum) for key, cell in cells.items()}
    assert sums == {
        datetime(2026, 3, 1, 10, tzinfo=UTC): (2, 1 + 3),
        datetime(2026, 3, 1, 11, tzinfo=UTC): (3, 2 + 4 + 5),
    }


prop_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 3),
    st.sampled_from(["a", "b", "1", "true", "0.5"]),
    st.lists(st.sampled_from(["t", "u"]), max_size=2),  # unhashable, as a list property
    st.tuples(st.sampled_from(["t", "u"])),  # the gateway's tags
)
packed_props = st.dictionaries(st.sampled_from(["model", "type", "n", "tags"]), prop_values)


@settings(max_examples=100, deadline=None)
@given(
    records=st.lists(
        st.tuples(
            st.sampled_from(["s1", "s2"]),
            st.integers(0, 7200),
            packed_props,
            st.lists(st.tuples(st.sampled_from(["c", "n", "x"]), packed_props), max_size=3),
        ),
        max_size=12,
    )
)
def test_carried_events_roll_up_as_their_rows_do(records: list[Any]) -> None:
    """`accumulate_carried` reads a record's packed events where `accumulate` reads the
    rows `derived.expand` makes of them: the same cells, whatever the properties' types
    (True against 1, lists, tags) and wherever a property is (shared or the event's own)."""
    from faregate.metering import derived

    specs = {
        "c": rollups.MetricSpec("c", "count_agg", None, ("model", "type")),
        "n": rollups.MetricSpec("n", "sum_agg", "n", ("model", "tags")),
        "x": rollups.MetricSpec("x", "max_agg", "n", ()),
    }
    carried = []
    for i, (sub, second, shared, parts) in enumerate(records):
        row = {
            "id": f"req_{i}",
            "external_subscription_id": sub,
            "external_customer_id": "cus",
            "created_at": START + timedelta(seconds=second),
        }
        packed = derived.pack(
            shared, [[code, f"{code}:{j}", own] for j, (code, own) in enumerate(parts)]
        )
        carried.append((row, packed))
    by_rows: dict[rollups.RollupKey, rollups.Cell] = {}
    rollups.accumulate(
        by_rows, specs, [e for row, p in carried for e in derived.of_carrier(row, p)]
    )
    by_records: dict[rollups.RollupKey, rollups.Cell] = {}
    rollups.accumulate_carried(by_records, specs, carried)
    assert {k: c.row(k) for k, c in by_records.items()} == {k: c.row(k) for k, c in by_rows.items()}
    # A batch rolled up a slice at a time, the dimensions' texts remembered across the
    # slices (as the usage writer does between turns of the event loop): the same cells.
    by_slices: dict[rollups.RollupKey, rollups.Cell] = {}
    memos = rollups.dims_memos()
    for start in range(0, len(carried), 3):
        rollups.accumulate_carried(by_slices, specs, carried[start : start + 3], memos)
    assert {k: c.row(k) for k, c in by_slices.items()} == {k: c.row(k) for k, c in by_rows.items()}
