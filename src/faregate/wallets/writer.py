"""The ledger writer: entries taken on the request path (holds, posts, releases) are made
durable in a journal segment at once (a copy into a mapped file) and written to the
database in batches off the request path. Replays are safe: an entry's key is inserted once."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from faregate.metering.journal import Journal
from faregate.store.db import FlushClock, WriteConnection
from faregate.wallets import ledger
from faregate.wallets import repository as repo
from faregate.wallets.ledger import Entry

log = logging.getLogger("faregate.wallets")
_FIELDS = tuple(f.name for f in dataclasses.fields(Entry))  # in ledger.COLUMNS order


def _created(value: object) -> datetime | None:
    return datetime.fromisoformat(value) if isinstance(value, str) else None


def _entry(values: list[Any]) -> Entry:
    """An entry from its journaled values, in `ledger.COLUMNS` order (a journal of an
    earlier version may end before the last fields: they keep their defaults)."""
    fields = dict(zip(_FIELDS, values, strict=False))
    fields["created_at"] = _created(fields.get("created_at"))
    return Entry(**fields)


def _entry_of_row(record: dict[str, Any]) -> Entry:
    """An entry journaled by column name, as segments written before `_entry`'s form were."""
    return _entry([record.get(name) for name in ledger.COLUMNS])


def _entries(record: dict[str, Any]) -> list[Entry]:
    return [_entry(v) for v in record.get("v", ())] + [
        _entry_of_row(r) for r in record.get("l", ())
    ]


async def _store(conn: AsyncConnection, entries: list[Entry], *, replayed: bool) -> None:
    """A batch in the database, each hold it also finishes folded into its finish
    (`ledger.fold_finished`).

    A replayed segment could bring back a hold whose folded finish is already stored: a
    stored batch's segments are recycled one by one, oldest first, so a hold's segment
    should never outlive its finish's, but if one did (a crash mid-recycle, a segment
    copied back by hand), the hold would stay held for good. So a replay drops a hold
    whose finish is stored folded. A batch of this process's own needs no such look-up:
    each of its holds was taken since the last batch, and its finish is in the batch or
    still to come."""
    entries = ledger.fold_finished(entries)
    if replayed:
        holds = [e.hold_id for e in entries if e.kind == "hold" and e.hold_id is not None]
        folded = await repo.holds_folded(conn, holds) if holds else set()
        if folded:
            entries = [e for e in entries if e.kind != "hold" or e.hold_id not in folded]
    await repo.apply_entries(conn, entries)


class LedgerWriter:
    def __init__(
        self, engine: AsyncEngine, journal_dir: str | Path, *, flush_interval: float = 0.2
    ) -> None:
        self._engine = engine
        self._journal = Journal(journal_dir)
        # Half an interval after the usage writer's flushes.
        self._clock = FlushClock(engine, flush_interval, phase=0.5)
        self._pending: list[Entry] = []
        # Holds taken since the journal was last sealed and not finished yet, by hold id:
        # (wallet, amount, when). See `hold`.
        self._open: dict[str, tuple[str, int, float]] = {}
        self._wake = asyncio.Event()
        self._arrived = asyncio.Event()  # something to write since the last flush began
        self._closing = False
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self._writes = WriteConnection(engine)

    def hold(self, wallet_id: str, hold_id: str, amount: int) -> None:
        """A hold the book has taken. Nearly every hold is finished before the next batch
        (every `journal_flush_s`), and is then stored only folded into its finish
        (`ledger.fold_finished`), so it is not journaled on its own: its finish, recorded
        with `record`, is journaled folded. A hold still open when the batch is sealed is
        journaled and stored then, as it was taken. One lost with the process before that
        had not finished: like a released hold, it had moved nothing, and no request of it
        was recorded. (Journaling each hold as it was taken cost ~4.5% of an embedded
        request's CPU: bench/HISTORY.md.)"""
        if amount < 0:
            raise ValueError("amount must not be negative")
        if not self._pending and not self._open:
            self._arrived.set()
        self._open[hold_id] = (wallet_id, amount, time.time())

    def record(self, *entries: Entry) -> None:
        """Durable when this returns. Journaled as values in column order, not by name:
        half the time of an append (an entry without a time gets this moment's). A post or
        release of a hold taken with `hold` and not yet journaled is folded into in place."""
        now = datetime.now(UTC)
        if self._open:
            for e in entries:
                if e.kind == "post" or e.kind == "release":
                    opened = self._open.pop(e.hold_id, None) if e.hold_id else None
                    if opened is not None:
                        ledger.fold_into(e, opened[1])
        self._journal.append({"v": [e.values(now) for e in entries]})
        if not self._pending:
            self._arrived.set()
        self._pending.extend(entries)

    def _record_open(self) -> None:
        """The holds still open, journaled and pending as taken: before a seal. They stay
        open here until their journal append succeeded, for the next flush to try again."""
        if self._open:
            holds = [
                ledger.hold(wallet, hold_id, amount, datetime.fromtimestamp(at, UTC))
                for hold_id, (wallet, amount, at) in self._open.items()
            ]
            self.record(*holds)
            self._open = {}

    async def start(self) -> None:
        for path in self._journal.leftovers():
            await self._replay(path)
        self._task = asyncio.create_task(self._run(), name="ledger-writer")

    async def _run(self) -> None:
        while not self._closing:
            await self._clock.next(self._wake, arrived=self._arrived)
            try:
                await self.flush()
            except Exception:  # the sealed segment stays on disk and is retried
                log.exception("ledger flush failed; will retry")
                self._arrived.set()
                await asyncio.sleep(1.0)

    async def flush(self) -> None:
        async with self._lock:
            self._record_open()
            if self._pending:
                sealed = self._journal.seal()
                batch, self._pending = self._pending, []
                try:  # the segments recycled once the batch is committed
                    async with self._writes.transaction(sealed.discard) as conn:
                        await _store(conn, batch, replayed=False)
                except BaseException:
                    sealed.release()  # the segments stay on disk, to be replayed
                    raise
            for path in self._journal.leftovers():
                await self._replay(path)

    async def _replay(self, path: Path) -> None:
        entries = [e for record in Journal.read(path) for e in _entries(record)]
        if entries:
            async with self._writes.transaction() as conn:
                await _store(conn, entries, replayed=True)
        await asyncio.to_thread(self._journal.discard, [path])

    async def close(self) -> None:
        if self._task is not None:
            self._closing = True
            self._wake.set()
            self._arrived.set()
            _, pending = await asyncio.wait({self._task}, timeout=30)
            for task in pending:
                task.cancel()
        await self.flush()
        await self._writes.close()
        self._journal.close()
