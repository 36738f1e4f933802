"""SqlHoldBook: holds for replicas that share only PostgreSQL. A hold is one conditional
UPDATE of the wallet row plus its ledger entry, in one transaction: the row lock serializes
replicas, so together they never hold past the wallet. Entries are written here, durably."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from faregate.wallets import ledger
from faregate.wallets import repository as repo
from faregate.wallets.book import Expired, Snapshot


class SqlHoldBook:
    durable = True

    def __init__(self, engine: AsyncEngine, ttl_s: float) -> None:
        self._engine = engine
        self._ttl_s = ttl_s
        self._stale = repo.StaleHoldScan(ttl_s)

    async def knows(self, wallet_id: str) -> bool:
        return True

    async def load(self, wallet_id: str, snapshot: Snapshot) -> None:
        return None

    async def set_funded(self, wallet_id: str, funded: int, version: int) -> None:
        return None  # top-ups update the row itself

    async def hold(
        self, wallet_id: str, hold_id: str, amount: int, ttl_s: float, extra: int = 0
    ) -> bool:
        async with self._engine.begin() as conn:
            return await repo.hold_if_covered(conn, ledger.hold(wallet_id, hold_id, amount), extra)

    async def finish(
        self,
        wallet_id: str,
        hold_id: str,
        held: int,
        actual: int | None,
        at: datetime | None = None,
    ) -> Snapshot | None:
        entry = (
            ledger.release(wallet_id, hold_id, held)
            if actual is None
            else ledger.post(wallet_id, hold_id, held, actual, at)
        )
        async with self._engine.begin() as conn:
            if not await repo.apply_entries(conn, [entry]):
                return None
            row = await repo.wallet_by_id(conn, wallet_id)
        return None if row is None else _snapshot(row)

    async def sweep_expired(self, now: float | None = None) -> list[Expired]:
        at = datetime.fromtimestamp(time.time() if now is None else now, UTC)
        async with self._engine.connect() as conn:
            stale = await self._stale.find(conn, at)
        expired = []
        for row in stale:
            held = int(row["held_nanos"])
            if await self.finish(row["wallet_id"], row["hold_id"], held, None):
                expired.append(Expired(row["wallet_id"], row["hold_id"], held))
        return expired

    async def snapshot(self, wallet_id: str) -> Snapshot | None:
        async with self._engine.connect() as conn:
            row = await repo.wallet_by_id(conn, wallet_id)
        return None if row is None else _snapshot(row)


def _snapshot(row: dict[str, Any]) -> Snapshot:
    return Snapshot(
        int(row["funded_nanos"]),
        int(row["funded_version"]),
        int(row["consumed_nanos"]),
        int(row["held_nanos"]),
    )
