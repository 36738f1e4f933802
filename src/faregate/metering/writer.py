"""The batched usage writer: request records and events go to the journal at once and to
the database in batches, off the request path, idempotently. The transaction that inserts a
batch's events also adds exactly the newly inserted ones to the hourly rollups.

On SQLite a request's own events ride on its record (`metering.derived`): the batch stores
the records, and rolls up the events of the records it stored. Events sent to the API are
stored as rows everywhere; one that repeats a stored request's event is dropped, as a repeat
of a stored row is."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import orjson
from sqlalchemy import select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from faregate.metering import derived, event_store, rollups
from faregate.metering.journal import Journal
from faregate.store.chunks import slice_size
from faregate.store.db import FlushClock, WriteConnection
from faregate.store.inserts import BatchInsert
from faregate.store.tables.metering import requests

log = logging.getLogger("faregate.metering")

# Deadlock and serialization failures between replicas' writers: the batch is simply retried,
# after a random share of a doubling wait (writers that collided once and waited alike
# would collide again: PostgreSQL takes a second to see each deadlock).
_RETRYABLE = (asyncpg.DeadlockDetectedError, asyncpg.SerializationError)
_RETRIES = 8
_BACKOFF_S = 0.05
_BACKOFF_CAP_S = 2.0
# On SQLite the event loop prepares a batch's events (records, binding, rollup sums) a
# slice at a time (store.chunks.slice_size), each slice one call on the connection's thread,
# letting requests run in between. PostgreSQL takes a batch in one COPY.
_SLICE = 256
# The events the records carry are rolled up on the event loop, ~6 µs a record: in slices of
# this many records or a quarter of the batch, with a turn of the loop between them. At
# c = 1 a flush of ~80 records rolled up at once held the loop 0.5-0.9 ms, which the request
# in flight waited for (bench/HISTORY.md).
_ROLLUP_SLICE = 16
# Requests named by stored API events (`_note_named`): past `_NAMED_MAX` of them, those
# named more than `_NAMED_FOR_S` ago are forgotten (no request runs that long), and past
# `_NAMED_CAP` the oldest.
_NAMED_FOR_S = 7200.0
_NAMED_MAX = 1000
_NAMED_CAP = 100_000

_DATETIME_FIELDS = ("created_at", "timestamp")
_DECIMAL_FIELDS = ("latency_ms", "ttft_ms", "seconds", "precise_total_amount_cents")


def _revive(row: dict[str, Any]) -> dict[str, Any]:
    for name in _DATETIME_FIELDS:
        if isinstance(row.get(name), str):
            row[name] = datetime.fromisoformat(row[name])
    for name in _DECIMAL_FIELDS:
        if isinstance(row.get(name), str):
            row[name] = Decimal(row[name])
    return row


class UsageWriter:
    def __init__(
        self,
        engine: AsyncEngine,
        journal_dir: str | Path,
        *,
        flush_interval: float = 0.2,
        max_batch: int = 2000,
        high_water: int = 20_000,
    ):
        self._engine = engine
        self._journal = Journal(journal_dir)
        self._clock = FlushClock(engine, flush_interval)
        self._max_batch = max_batch
        self._requests: list[dict[str, Any]] = []
        self._events: list[dict[str, Any]] = []  # to store as rows
        # The records that carry their events, with the events packed: made into rows only
        # where they are read (`unflushed_events`), rolled up from their packed form.
        self._carried: list[derived.Carried] = []
        # Those of the batch being inserted.
        self._inflight: tuple[list[derived.Carried], list[dict[str, Any]]] = ([], [])
        self._carries = engine.dialect.name == "sqlite"
        self._wake = asyncio.Event()
        self._arrived = asyncio.Event()  # something to write since the last flush began
        self._high_water = high_water
        self._room = asyncio.Event()
        self._room.set()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._flush_lock = asyncio.Lock()
        self._writes = WriteConnection(engine)
        self._insert_requests = BatchInsert(requests)
        self._specs = rollups.MetricSpecs()
        # Requests named by events sent to the API and stored as rows before the request's
        # record was (SQLite): request id -> (when, (subscription, transaction id) of each).
        self._named: dict[str, tuple[float, set[tuple[str, str]]]] = {}

    def record(
        self,
        request_row: dict[str, Any],
        event_rows: list[dict[str, Any]] | None = None,
        packed: derived.Packed | None = None,
    ) -> None:
        """Accept one request's record and its events: `packed`, the request's own events
        packed (`metering.derived`), which the record carries on SQLite and which are stored
        as rows elsewhere; or `event_rows`, events stored as rows. Durable when this
        returns."""
        if packed is not None and self._carries:
            request_row["events"] = orjson.dumps(packed).decode()
            self._journal.append({"r": request_row})
            self._carried.append((request_row, packed))
        else:
            if packed is not None:
                event_rows = derived.of_carrier(request_row, packed)
            elif event_rows is None:
                event_rows = []
            self._journal.append({"r": request_row, "e": event_rows})
            self._events.extend(event_rows)
        if not self._requests:
            self._arrived.set()
        self._requests.append(request_row)
        if len(self._requests) >= self._max_batch:
            self._wake.set()

    def record_events(self, event_rows: list[dict[str, Any]]) -> None:
        """Accept external events (already validated). Durable when this returns."""
        self._journal.append({"e": event_rows})
        if not self._events:
            self._arrived.set()
        self._events.extend(event_rows)
        if len(self._events) >= self._max_batch:
            self._wake.set()

    async def room(self) -> None:
        """Wait while `high_water` events or more wait for the database: external ingestion
        calls this before `record_events`, so it slows down to what the database absorbs
        instead of growing the backlog (and the journal) without bound."""
        while len(self._events) >= self._high_water and not self._closing:
            self._room.clear()
            self._wake.set()
            await self._room.wait()

    def unflushed_events(self, external_subscription_id: str) -> list[dict[str, Any]]:
        """Events of this subscription accepted here but maybe not in the database yet (the
        tail a usage read adds to the rollups), in ingestion order but for the requests' own
        first: the flush stores those over an API event repeating one of them."""
        sub = external_subscription_id
        inflight_carried, inflight_events = self._inflight
        out: list[dict[str, Any]] = []
        for carried, evs in ((inflight_carried, inflight_events), (self._carried, self._events)):
            for row, packed in carried:
                if row["external_subscription_id"] == sub:
                    out += derived.of_carrier(row, packed)
            out += [e for e in evs if e["external_subscription_id"] == sub]
        return out

    async def start(self) -> None:
        await self.recover()
        self._task = asyncio.create_task(self._run(), name="usage-writer")

    async def recover(self) -> int:
        """Replay segments a previous process left behind; returns the segments replayed."""
        leftovers = self._journal.leftovers()
        for path in leftovers:
            await self._replay_one(path)
        if leftovers:
            log.info("replayed usage journal", extra={"segments": len(leftovers)})
        return len(leftovers)

    async def _run(self) -> None:
        while not self._closing:
            await self._clock.next(self._wake, arrived=self._arrived)
            try:
                await self.flush()
            except Exception:  # the segment stays on disk and is retried next round
                log.exception("usage flush failed; will retry")
                self._arrived.set()
                await asyncio.sleep(1.0)

    async def flush(self) -> None:
        async with self._flush_lock:
            if self._requests or self._events:
                # Seal and take the batch with no await in between: they hold the same records.
                sealed = self._journal.seal()
                reqs, evs, carried = self._requests, self._events, self._carried
                self._requests, self._events, self._carried = [], [], []
                self._inflight = (carried, evs)
                self._room.set()
                try:
                    # The segments are recycled once the batch is committed.
                    await self._insert(reqs, evs, carried, then=sealed.discard)
                except BaseException:
                    sealed.release()  # the segments stay on disk, to be replayed
                    raise
                finally:
                    self._inflight = ([], [])
            for path in self._journal.leftovers():  # segments an earlier failure left behind
                await self._replay_one(path)

    async def _replay_one(self, path: Path) -> None:
        """A segment's records and events: the batch it was sealed with may have been stored
        before the process stopped, so stored records are skipped (their carried events are
        rolled up already) and stored events are conflicts."""
        reqs: list[dict[str, Any]] = []
        evs: list[dict[str, Any]] = []
        carried: list[derived.Carried] = []
        for record in Journal.read(path):
            if "r" in record:
                row = _revive(record["r"])
                reqs.append(row)
                packed = derived.packed_of(row)
                if packed is not None:
                    carried.append((row, packed))
            evs.extend(_revive(e) for e in record.get("e", ()))
        await self._insert(
            reqs, evs, carried, replay=True, then=lambda: self._journal.discard([path])
        )

    async def _insert(
        self,
        reqs: list[dict[str, Any]],
        evs: list[dict[str, Any]],
        carried: list[derived.Carried],
        *,
        replay: bool = False,
        then: Callable[[], None] | None = None,
    ) -> None:
        """Store a batch; `then` (blocking) runs once it is committed."""
        for attempt in range(_RETRIES):
            try:
                await self._insert_once(reqs, evs, carried, replay, then)
                if self._named:
                    for row in reqs:
                        self._named.pop(row["id"], None)
                return
            except DBAPIError as err:
                if attempt == _RETRIES - 1 or not isinstance(
                    getattr(err.orig, "__cause__", None), _RETRYABLE
                ):
                    raise
            except _RETRYABLE:
                if attempt == _RETRIES - 1:
                    raise
            await asyncio.sleep(random.uniform(0, min(_BACKOFF_CAP_S, _BACKOFF_S * 2**attempt)))

    async def _insert_once(
        self,
        reqs: list[dict[str, Any]],
        evs: list[dict[str, Any]],
        carried: list[derived.Carried],
        replay: bool,
        then: Callable[[], None] | None,
    ) -> None:
        async with self._writes.transaction(then) as conn:
            postgres = conn.dialect.name == "postgresql"
            if postgres:  # also begins the transaction the raw COPY joins
                await conn.exec_driver_sql(
                    f"SELECT pg_advisory_xact_lock_shared({rollups.ROLLUP_LOCK})"
                )
            if reqs and replay and carried:
                stored = await _stored_ids(conn, [r["id"] for r in reqs])
                if stored:
                    reqs = [r for r in reqs if r["id"] not in stored]
                    carried = [c for c in carried if c[0]["id"] not in stored]
            if reqs and carried and (replay or self._named):
                carried = await self._without_stored_repeats(conn, reqs, carried, replay)
            if reqs:
                await self._insert_requests.execute(conn, reqs)
            if self._carries and evs:
                evs = await _not_carried(conn, evs)
            if evs or carried:
                specs = await self._specs.read(conn)
                cells: dict[rollups.RollupKey, rollups.Cell] = {}
                step = slice_size(len(carried), _ROLLUP_SLICE)
                memos = rollups.dims_memos()
                for start in range(0, len(carried), step):  # yielding between slices
                    if start:
                        await asyncio.sleep(0)
                    rollups.accumulate_carried(cells, specs, carried[start : start + step], memos)
                # On SQLite, a slice at a time (see _SLICE); a repeat of an event of an
                # earlier slice is a conflict, so it is not counted twice.
                size = max(len(evs), 1) if postgres else slice_size(len(evs), _SLICE)
                for start in range(0, len(evs), size):
                    inserted = await event_store.insert_new(conn, evs[start : start + size])
                    rollups.accumulate(cells, specs, inserted)
                    if self._carries:
                        self._note_named(inserted)
                await rollups.apply(conn, cells)

    def _note_named(self, inserted: list[dict[str, Any]]) -> None:
        """Remember the stored API events whose transaction ids name a request: one whose
        record comes in a later batch must not count them again. Forgotten when the record
        is stored, or once no request named then can still be running."""
        now = time.monotonic()
        for event in inserted:
            request_id = _request_of(event)
            if request_id is not None:
                key = (event["external_subscription_id"], event["transaction_id"])
                self._named.setdefault(request_id, (now, set()))[1].add(key)
        if len(self._named) > _NAMED_MAX:
            recent = [(r, e) for r, e in self._named.items() if e[0] >= now - _NAMED_FOR_S]
            self._named = dict(recent[-_NAMED_CAP:])  # in the order they were named

    async def _without_stored_repeats(
        self,
        conn: AsyncConnection,
        reqs: list[dict[str, Any]],
        carried: list[derived.Carried],
        replay: bool,
    ) -> list[derived.Carried]:
        """`carried` without the events that repeat events of their subscription sent to the
        API and stored as rows in an earlier batch, before their request's record: the first
        one stored wins, as for any repeat, so the records stop carrying them (their `events`
        repacked). Looked up for the requests an API event named (`_note_named`), and for
        every record of a replayed segment (the names were this process's)."""
        if replay:
            keys = {
                (e["external_subscription_id"], e["transaction_id"])
                for row, packed in carried
                for e in derived.of_carrier(row, packed)
            }
        else:
            keys = set().union(
                *(self._named[row["id"]][1] for row in reqs if row["id"] in self._named)
            )
        repeats = await event_store.stored_rows(conn, keys) if keys else set()
        if not repeats:
            return carried
        by_record: dict[tuple[str, str | None], set[str]] = {}
        for sub, tx in repeats:
            by_record.setdefault((sub, derived.request_id_of(tx)), set()).add(tx)
        kept: list[derived.Carried] = []
        for row, packed in carried:
            dropped = by_record.get((row["external_subscription_id"], row["id"]))
            if dropped:
                row["events"] = derived.without(row, dropped)
                if row["events"] is None:
                    continue
                packed = orjson.loads(row["events"])
            kept.append((row, packed))
        return kept

    async def close(self) -> None:
        if self._task is not None:
            # Let the loop finish the flush it may be in: cancelling it mid-transaction could
            # leave the SQLite write lock held by a half-closed connection.
            self._closing = True
            self._wake.set()
            self._arrived.set()
            self._room.set()
            _, pending = await asyncio.wait({self._task}, timeout=30)
            for task in pending:
                task.cancel()
        await self.flush()
        await self._writes.close()
        self._journal.close()


def _request_of(event: dict[str, Any]) -> str | None:
    return derived.request_id_of(event["transaction_id"])


async def _stored_ids(conn: AsyncConnection, ids: list[str]) -> set[str]:
    stored: set[str] = set()
    for start in range(0, len(ids), 500):
        query = select(requests.c.id).where(requests.c.id.in_(ids[start : start + 500]))
        stored.update(r[0] for r in await conn.execute(query))
    return stored


async def _not_carried(conn: AsyncConnection, evs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The events (sent to the API) that do not repeat an event a stored record carries."""
    keys = [(e["external_subscription_id"], e["transaction_id"]) for e in evs]
    if all(derived.request_id_of(tx) is None for _, tx in keys):
        return evs
    repeats = await derived.stored_keys(conn, keys)
    return [e for e, key in zip(evs, keys, strict=True) if key not in repeats]
