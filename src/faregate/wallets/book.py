"""Hold books: where a request's hold is taken atomically on the hot path. The ledger in the
database stays the truth; a book is the fast, shared view of each wallet's
funded - consumed - held. Three backends behind one contract:

- MemoryHoldBook: one process (the embedded SQLite default); each call runs to completion on
  the event loop, which makes it atomic. Ledger entries go through the journal writer.
- RedisHoldBook (book_redis): replicas sharing Redis; each call is one Lua script.
- SqlHoldBook (book_sql): replicas sharing only PostgreSQL; each hold is one conditional
  UPDATE of the wallet row, and the entries are written in the same transaction.
"""

from __future__ import annotations

import heapq
import time
from dataclasses import dataclass
from datetime import datetime
from typing import NamedTuple, Protocol


@dataclass(frozen=True, slots=True)
class Expired:
    wallet_id: str
    hold_id: str
    amount: int


class Snapshot(NamedTuple):  # made by every finish: a NamedTuple is the cheapest to build
    funded: int
    version: int
    consumed: int
    held: int = 0

    @property
    def available(self) -> int:
        return self.funded - self.consumed - self.held


class HoldBook(Protocol):
    # True when the book writes ledger entries itself, in the transaction of its own step.
    durable: bool

    async def knows(self, wallet_id: str) -> bool: ...

    async def load(self, wallet_id: str, snapshot: Snapshot) -> None:
        """Start tracking a wallet from the ledger's sums (no-op when already tracked)."""

    async def set_funded(self, wallet_id: str, funded: int, version: int) -> None:
        """Top-ups and voids made anywhere: applied when `version` is newer than the book's."""

    async def hold(
        self, wallet_id: str, hold_id: str, amount: int, ttl_s: float, extra: int = 0
    ) -> bool:
        """Hold `amount` iff funded - consumed - held + extra ≥ amount (`extra`: a credit
        limit). False when not covered."""

    async def finish(
        self,
        wallet_id: str,
        hold_id: str,
        held: int,
        actual: int | None,
        at: datetime | None = None,
        subscription_id: str | None = None,
    ) -> Snapshot | None:
        """Post `actual` (None: release) and drop the hold; the wallet's state after it, only
        for the call that finished it (None otherwise: a second post or release changes
        nothing)."""

    async def sweep_expired(self, now: float | None = None) -> list[Expired]:
        """Release holds whose TTL passed (their process died or never settled)."""

    async def snapshot(self, wallet_id: str) -> Snapshot | None: ...


@dataclass(slots=True)
class _Account:
    funded: int
    version: int
    consumed: int
    held: int = 0


class MemoryHoldBook:
    durable = False

    def __init__(self) -> None:
        self._accounts: dict[str, _Account] = {}
        self._holds: dict[str, tuple[str, int, float]] = {}  # id -> wallet, amount, expires
        self._expiries: list[tuple[float, str]] = []

    async def knows(self, wallet_id: str) -> bool:
        return wallet_id in self._accounts

    async def load(self, wallet_id: str, snapshot: Snapshot) -> None:
        if wallet_id not in self._accounts:
            self._accounts[wallet_id] = _Account(
                snapshot.funded, snapshot.version, snapshot.consumed
            )

    async def set_funded(self, wallet_id: str, funded: int, version: int) -> None:
        account = self._accounts.get(wallet_id)
        if account is not None and version > account.version:
            account.funded, account.version = funded, version

    async def hold(
        self, wallet_id: str, hold_id: str, amount: int, ttl_s: float, extra: int = 0
    ) -> bool:
        account = self._accounts[wallet_id]
        if hold_id in self._holds:
            return True
        if account.funded - account.consumed - account.held + extra < amount:
            return False
        account.held += amount
        expires = time.time() + ttl_s
        self._holds[hold_id] = (wallet_id, amount, expires)
        if len(self._expiries) > 2 * len(self._holds) + 64:
            self._compact_expiries()
        heapq.heappush(self._expiries, (expires, hold_id))
        return True

    def _compact_expiries(self) -> None:
        """Drop heap entries of holds already finished. Without this the heap keeps one
        entry per request for the whole hold TTL (minutes of traffic); amortised, it runs
        when finished holds are more than half the heap."""
        self._expiries = [(record[2], hold_id) for hold_id, record in self._holds.items()]
        heapq.heapify(self._expiries)

    async def finish(
        self,
        wallet_id: str,
        hold_id: str,
        held: int,
        actual: int | None,
        at: datetime | None = None,
        subscription_id: str | None = None,
    ) -> Snapshot | None:
        record = self._holds.pop(hold_id, None)
        if record is None:
            return None
        a = self._accounts[record[0]]
        a.held -= record[1]
        if actual is not None:
            a.consumed += actual
        return Snapshot(a.funded, a.version, a.consumed, a.held)

    async def sweep_expired(self, now: float | None = None) -> list[Expired]:
        now = time.time() if now is None else now
        expired = []
        while self._expiries and self._expiries[0][0] <= now:
            expires, hold_id = heapq.heappop(self._expiries)
            record = self._holds.get(hold_id)
            if record is not None and record[2] == expires:
                del self._holds[hold_id]
                self._accounts[record[0]].held -= record[1]
                expired.append(Expired(record[0], hold_id, record[1]))
        return expired

    async def snapshot(self, wallet_id: str) -> Snapshot | None:
        a = self._accounts.get(wallet_id)
        return None if a is None else Snapshot(a.funded, a.version, a.consumed, a.held)
