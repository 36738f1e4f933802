"""Hourly rollups of usage events: what each inserted event adds to its (subscription, metric,
filter dimensions, hour) row, and how those additions are written.

The writer calls `apply` in the transaction that inserted the events, with exactly the events
that transaction inserted, so a rollup row counts every stored event once. unique_count
metrics are not rolled up (their value depends on the order of adds and removes across the
whole period); readers scan their raw events instead.
"""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import orjson
from sqlalchemy import case, delete, func, select
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncConnection

from faregate.billing.events import text_property
from faregate.billing.metrics import BillableMetric
from faregate.metering import derived
from faregate.metering.derived import Carried
from faregate.money import exact, parse_decimal
from faregate.store.inserts import begun, on_thread
from faregate.store.tables.billing import billable_metrics
from faregate.store.tables.metering import events, usage_rollups

# Writers hold this PostgreSQL advisory lock shared, a metric's creation holds it exclusively
# while it rebuilds that metric's rollups: no event is inserted unrolled in between.
ROLLUP_LOCK = 0x6661726567617465  # "faregate"
ROLLED = frozenset({"count_agg", "sum_agg", "max_agg", "latest_agg", "weighted_sum_agg"})

RollupKey = tuple[str, str, str, datetime]  # subscription, code, dims, hour


@dataclass(frozen=True, slots=True)
class MetricSpec:
    """What rolling up needs of a metric: its aggregation, field and filter keys."""

    code: str
    kind: str
    field: str | None
    keys: tuple[str, ...]

    @classmethod
    def of(cls, metric: BillableMetric) -> MetricSpec:
        keys = tuple(sorted(f.key for f in metric.filters))
        return cls(metric.code, metric.aggregation_type, metric.field_name, keys)

    @property
    def rolled(self) -> bool:
        return self.kind in ROLLED


class Cell:
    """The additions of some events to one rollup row."""

    __slots__ = ("events", "latest", "latest_at", "max", "sum", "time_sum", "values")

    def __init__(self) -> None:
        self.events = 0
        self.values = 0
        self.sum: Decimal | int | None = None
        self.max: Decimal | None = None
        self.latest: Decimal | None = None
        self.latest_at: datetime | None = None
        self.time_sum: Decimal | None = None

    def row(self, key: RollupKey) -> dict[str, Any]:
        sub, code, dims, hour = key
        return {
            "external_subscription_id": sub,
            "code": code,
            "dims": dims,
            "hour": hour,
            "events_count": self.events,
            "values_count": self.values,
            "value_sum": None if self.sum is None else Decimal(self.sum),
            "value_max": self.max,
            "latest_value": self.latest,
            "latest_at": self.latest_at,
            "value_time_sum": self.time_sum,
        }


def dims_json(values: Mapping[str, str]) -> str:
    return orjson.dumps(dict(values), option=orjson.OPT_SORT_KEYS).decode()


def number(value: object) -> Decimal | int | None:
    """The field's numeric value; a value that is no number is not aggregated (ingest refuses
    those for known metrics, so only events stored before their metric existed can have one)."""
    if value is None:
        return None
    if type(value) is int:
        return value
    try:
        number = parse_decimal(value)
    except (ValueError, ArithmeticError):
        return None
    return number if number.is_finite() else None


_HOUR = timedelta(hours=1)
_START = datetime.min.replace(tzinfo=UTC)


def _hour(ts: datetime) -> datetime:
    if ts.tzinfo is not UTC:
        ts = ts.astimezone(UTC)
    return ts.replace(minute=0, second=0, microsecond=0)


def _dims(spec: MetricSpec, properties: Mapping[str, object], memo: dict[Any, str]) -> str:
    keys = spec.keys
    if not keys:
        return "{}"
    values = tuple([text_property(properties, k) for k in keys])
    # Keyed by the filter keys too: two metrics filtering on different keys must not share
    # the dims of equal values.
    found = memo.get((keys, values))
    if found is None:
        found = memo[keys, values] = dims_json(
            {k: v for k, v in zip(keys, values, strict=True) if v is not None}
        )
    return found


@exact
def accumulate(
    cells: dict[RollupKey, Cell], specs: Mapping[str, MetricSpec], rows: Iterable[dict[str, Any]]
) -> None:
    """Add event rows (ingestion order) to `cells`; events of unknown or unrolled metrics are
    skipped."""
    rolled = {code: spec for code, spec in specs.items() if spec.rolled}
    memo: dict[Any, str] = {}
    # The hour of the event before, and the next: a batch's events are nearly all of one
    # hour, and two comparisons cost far less than `datetime.replace` with its keywords.
    hour = end = _START
    for row in rows:
        spec = rolled.get(row["code"])
        if spec is None:
            continue
        ts: datetime = row["timestamp"]
        if not hour <= ts < end:
            hour = _hour(ts)
            end = hour + _HOUR
        props = row["properties"] or {}
        key = (row["external_subscription_id"], spec.code, _dims(spec, props, memo), hour)
        cell = cells.get(key)
        if cell is None:
            cell = cells[key] = Cell()
        cell.events += 1
        if spec.kind == "count_agg":
            continue
        value = number(props.get(spec.field or ""))
        if value is None:
            continue
        cell.values += 1
        _add_value(spec.kind, cell, value, ts, hour)


# The dimensions' texts `accumulate_carried` made, by their values (see there).
DimsMemos = tuple[dict[Any, str], dict[Any, str]]


def dims_memos() -> DimsMemos:
    return {}, {}


@exact
def accumulate_carried(
    cells: dict[RollupKey, Cell],
    specs: Mapping[str, MetricSpec],
    records: Iterable[Carried],
    memos: DimsMemos | None = None,
) -> None:
    """`accumulate` for the events request records carry, read from their packed form
    without making their rows (`derived.expand`): each property is looked up where it is,
    the event's own or the shared ones. A batch's events are nearly all alike but for their
    numbers, so their dimensions are remembered by the properties' values as they are, and
    made text (`text_property`) once for each: in `memos` (`dims_memos()`) when a batch is
    accumulated in several calls, so that each is made once a batch, not once a call."""
    rolled = {code: spec for code, spec in specs.items() if spec.rolled}
    memo, raw_memo = memos if memos is not None else dims_memos()
    hour = end = _START
    for row, packed in records:
        ts: datetime = row["created_at"]
        if not hour <= ts < end:
            hour = _hour(ts)
            end = hour + _HOUR
        subscription = row["external_subscription_id"]
        shared = packed["p"]
        for code, _, own in packed["e"]:
            spec = rolled.get(code)
            if spec is None:
                continue
            keys = spec.keys
            if not keys:
                dims = "{}"
            else:
                raw = tuple([own[k] if k in own else shared.get(k) for k in keys])
                # Keyed by the values' types too: True and 1 are equal, their texts are not.
                seen = (keys, raw, tuple([type(v) for v in raw]))
                try:
                    found = raw_memo.get(seen)
                except TypeError:  # a value that cannot be hashed (a list, say)
                    found = seen = None
                if found is None:
                    found = _dims(spec, {**shared, **own}, memo)
                    if seen is not None:
                        raw_memo[seen] = found
                dims = found
            # From here `accumulate`'s steps, written out: a call per event costs more.
            key = (subscription, spec.code, dims, hour)
            cell = cells.get(key)
            if cell is None:
                cell = cells[key] = Cell()
            cell.events += 1
            if spec.kind == "count_agg":
                continue
            name = spec.field or ""
            value = own[name] if name in own else shared.get(name)
            if type(value) is not int:
                value = number(value)
                if value is None:
                    continue
            cell.values += 1
            _add_value(spec.kind, cell, value, ts, hour)


def _add_value(kind: str, cell: Cell, value: Decimal | int, ts: datetime, hour: datetime) -> None:
    if kind == "sum_agg":
        cell.sum = value if cell.sum is None else cell.sum + value
    elif kind == "max_agg":
        if cell.max is None or value > cell.max:
            cell.max = Decimal(value)
    elif kind == "latest_agg":
        if cell.latest_at is None or ts >= cell.latest_at:
            cell.latest, cell.latest_at = Decimal(value), ts
    else:  # weighted_sum_agg
        delta = ts.astimezone(UTC) - hour
        offset = Decimal(delta.seconds * 1_000_000 + delta.microseconds).scaleb(-6)
        cell.sum = value if cell.sum is None else cell.sum + value
        timed = value * offset
        cell.time_sum = timed if cell.time_sum is None else cell.time_sum + timed


@exact
def merge_cells(left: Cell, right: Cell) -> Cell:
    """`right`'s additions applied after `left`'s (later ingestion wins latest ties)."""
    out = Cell()
    out.events = left.events + right.events
    out.values = left.values + right.values
    out.sum = _add(left.sum, right.sum)
    out.time_sum = _add(left.time_sum, right.time_sum)
    maxes = [m for m in (left.max, right.max) if m is not None]
    out.max = max(maxes) if maxes else None
    newer = (
        right
        if right.latest_at is not None
        and (left.latest_at is None or right.latest_at >= left.latest_at)
        else left
    )
    out.latest, out.latest_at = newer.latest, newer.latest_at
    return out


def _add(a: Decimal | int | None, b: Decimal | int | None) -> Decimal | int | None:
    if a is None:
        return b
    return a if b is None else a + b


def cell_of(row: Mapping[str, Any]) -> Cell:
    """A stored rollup row as a Cell (SQLite keeps the decimals as text)."""
    cell = Cell()
    cell.events = int(row["events_count"])
    cell.values = int(row["values_count"])
    cell.sum = _decimal(row["value_sum"])
    cell.max = _decimal(row["value_max"])
    cell.latest = _decimal(row["latest_value"])
    cell.latest_at = _aware(row["latest_at"])
    cell.time_sum = _decimal(row["value_time_sum"])
    return cell


def _decimal(value: object) -> Decimal | None:
    if value is None:
        return None
    return value if isinstance(value, Decimal) else Decimal(str(value))


def _aware(value: datetime | None) -> datetime | None:
    if value is not None and value.tzinfo is None:  # SQLite returns naive UTC
        return value.replace(tzinfo=UTC)
    return value


# --- writing ---------------------------------------------------------------------------


class MetricSpecs:
    """Every billable metric's spec, as the writer reads it in each batch's own transaction:
    a metric created anywhere (its creation rebuilds its rollups) is then rolled up by every
    batch that commits after it, so no event is stored unrolled. The definitions are still
    read every batch; the specs are rebuilt only when one of them changed."""

    def __init__(self) -> None:
        self._definitions: list[Any] | None = None
        self._texts: list[str] | None = None  # the definitions as SQLite stores them
        self._specs: dict[str, MetricSpec] = {}

    async def read(self, conn: AsyncConnection) -> dict[str, MetricSpec]:
        if conn.dialect.name == "sqlite":  # one hand-over to the connection's thread, not four
            texts = await on_thread(conn, _definition_texts)
            if texts == self._texts:
                return self._specs
            self._texts = texts
            definitions = [orjson.loads(text) for text in texts]
        else:
            rows = await conn.execute(select(billable_metrics.c.definition))
            definitions = [definition for (definition,) in rows]
        if definitions != self._definitions:
            specs = {}
            for definition in definitions:
                spec = MetricSpec.of(BillableMetric.from_dict(definition))
                specs[spec.code] = spec
            self._definitions, self._specs = definitions, specs
        return self._specs


async def apply(conn: AsyncConnection, cells: Mapping[RollupKey, Cell]) -> None:
    """Add `cells` to the stored rollups, in this transaction."""
    if not cells:
        return
    ordered = sorted(cells.items(), key=lambda kv: (kv[0][0], kv[0][1], kv[0][2], kv[0][3]))
    if conn.dialect.name == "postgresql":
        await _apply_postgres(conn, [cell.row(key) for key, cell in ordered])
    else:
        await _apply_sqlite(conn, dict(ordered))


async def _apply_postgres(conn: AsyncConnection, rows: list[dict[str, Any]]) -> None:
    stmt = postgresql.insert(usage_rollups)
    r, x = usage_rollups.c, stmt.excluded

    def added(col: str) -> Any:
        return case((x[col].is_(None), r[col]), else_=func.coalesce(r[col], 0) + x[col])

    newer = x.latest_at.isnot(None) & (r.latest_at.is_(None) | (x.latest_at >= r.latest_at))
    stmt = stmt.on_conflict_do_update(
        index_elements=["external_subscription_id", "code", "dims", "hour"],
        set_={
            "events_count": r.events_count + x.events_count,
            "values_count": r.values_count + x.values_count,
            "value_sum": added("value_sum"),
            "value_time_sum": added("value_time_sum"),
            "value_max": func.greatest(r.value_max, x.value_max),
            "latest_value": case((newer, x.latest_value), else_=r.latest_value),
            "latest_at": func.greatest(r.latest_at, x.latest_at),
        },
    )
    await conn.execute(stmt, rows)


_ROLLED_UP = (
    "events_count",
    "values_count",
    "value_sum",
    "value_max",
    "latest_value",
    "latest_at",
    "value_time_sum",
)
_KEY = ("external_subscription_id", "code", "dims", "hour")
_COLUMNS = ", ".join(f'"{name}"' for name in (*_KEY, *_ROLLED_UP))
# SQLite: the rows a batch touches, by primary key (row values), and their upsert.
_SQLITE_READ = f"SELECT {_COLUMNS} FROM usage_rollups WHERE ({', '.join(_KEY)}) IN (VALUES {{}})"
_SQLITE_UPSERT = (
    f"INSERT INTO usage_rollups ({_COLUMNS}) VALUES ({', '.join('?' * 11)}) "
    f"ON CONFLICT ({', '.join(_KEY)}) DO UPDATE SET "
    + ", ".join(f'"{name}" = excluded."{name}"' for name in _ROLLED_UP)
)
_READ_KEYS = 200  # keys per read: 800 values, under SQLite's oldest limit of 999


def _definition_texts(db: sqlite3.Connection) -> list[str]:
    return [text for (text,) in db.execute("SELECT definition FROM billable_metrics")]


async def _apply_sqlite(conn: AsyncConnection, cells: dict[RollupKey, Cell]) -> None:
    """SQLite has one writer at a time: read the touched rows, merge, write back, all in
    one call on the connection's thread (through SQLAlchemy, a statement was three or four
    hand-overs to that thread and back, each costing the flush ~0.1 ms of CPU whatever its
    rows: most of a small flush). Times are bound as text by the column type's own
    processor, so a key matches the row that SQLAlchemy or this wrote."""
    as_text = _time_text(conn.dialect)
    keyed = {
        (sub, code, dims, as_text(hour)): cell for (sub, code, dims, hour), cell in cells.items()
    }
    await on_thread(conn, lambda db: _merge_on_sqlite(begun(db), keyed, as_text))


def _merge_on_sqlite(
    db: sqlite3.Connection, cells: dict[tuple[str, str, str, str], Cell], as_text: Any
) -> None:
    keys = list(cells)
    merged = dict(cells)
    for start in range(0, len(keys), _READ_KEYS):
        part = keys[start : start + _READ_KEYS]
        query = _SQLITE_READ.format(", ".join(["(?, ?, ?, ?)"] * len(part)))
        for row in db.execute(query, [value for key in part for value in key]):
            key = row[:4]
            if key in merged:
                merged[key] = merge_cells(_stored_cell(row), merged[key])
    db.executemany(
        _SQLITE_UPSERT,
        [
            (
                *key,
                cell.events,
                cell.values,
                None if cell.sum is None else str(Decimal(cell.sum)),
                None if cell.max is None else str(cell.max),
                None if cell.latest is None else str(cell.latest),
                None if cell.latest_at is None else as_text(cell.latest_at),
                None if cell.time_sum is None else str(cell.time_sum),
            )
            for key, cell in merged.items()
        ],
    )


def _stored_cell(row: tuple[Any, ...]) -> Cell:
    """A row of `_SQLITE_READ` as a Cell (decimals as text, times as naive UTC text)."""
    cell = Cell()
    cell.events, cell.values = int(row[4]), int(row[5])
    cell.sum, cell.max, cell.latest = _decimal(row[6]), _decimal(row[7]), _decimal(row[8])
    cell.latest_at = None if row[9] is None else _utc(datetime.fromisoformat(row[9]))
    cell.time_sum = _decimal(row[10])
    return cell


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


@functools.cache
def _time_text(dialect: Dialect) -> Any:
    """The text SQLite stores for a `hour` or `latest_at` time (both DATETIME(timezone))."""
    process = usage_rollups.c.hour.type.dialect_impl(dialect).bind_processor(dialect)
    assert process is not None
    return process


async def rebuild(conn: AsyncConnection, metric: BillableMetric) -> None:
    """Recompute a metric's rollups from its stored events (a metric created after some of
    its events were ingested). Holds the rollup lock so no writer inserts events meanwhile."""
    if conn.dialect.name == "postgresql":
        await conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({ROLLUP_LOCK})")
    await conn.execute(delete(usage_rollups).where(usage_rollups.c.code == metric.code))
    spec = MetricSpec.of(metric)
    if not spec.rolled:
        return
    query = (
        select(
            events.c.external_subscription_id,
            events.c.code,
            events.c.timestamp,
            events.c.properties,
        )
        .where(events.c.code == metric.code)
        .order_by(events.c.id)
    )
    cells: dict[RollupKey, Cell] = {}
    result = await conn.stream(query)
    async for part in result.mappings().partitions(5000):
        rows = [{**r, "timestamp": _aware(r["timestamp"])} for r in part]
        accumulate(cells, {spec.code: spec}, rows)
    async for carried in derived.of_code(conn, metric.code):  # where records carry them
        accumulate(cells, {spec.code: spec}, [_with_aware_time(e) for e in carried])
    await apply(conn, cells)


def _with_aware_time(event: dict[str, Any]) -> dict[str, Any]:
    event["timestamp"] = _aware(event["timestamp"])
    return event
