"""Which funding the prepaid credits applied to an invoice come from, as Lago's traceable
wallets tell it (`WalletTransactions::TrackConsumptionService`, `in_consumption_order`):
every outbound amount (credits applied to an invoice, credits voided) draws on the wallet's
top-ups not drawn yet, credits granted for free before purchased ones, oldest first. Only
this split is derived here; balances stay the ledger's sums."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from faregate.store.tables.wallets import wallet_transactions


@dataclass
class _Lot:
    granted: bool
    remaining: int  # nanos


def _draw(lots: list[_Lot], amount: int) -> int:
    """Draw `amount` nanos from the lots in Lago's order; returns the granted part (what no
    lot covers counts as purchased)."""
    granted = 0
    for lot in sorted(lots, key=lambda lot: not lot.granted):  # stable: oldest first
        if amount <= 0:
            break
        take = min(lot.remaining, amount)
        lot.remaining -= take
        amount -= take
        granted += take if lot.granted else 0
    return granted


def granted_part_of_draw(transactions: Iterable[Mapping[str, Any]], amount: int) -> int:
    """The granted part of drawing `amount` nanos after the wallet's settled `transactions`
    (oldest first). A top-up is an inbound transaction of no invoice; an inbound one of an
    invoice gives back credits consumed above it, which no invoice drew, so it is no lot."""
    lots: list[_Lot] = []
    for tx in transactions:
        if tx["transaction_type"] == "inbound" and tx["invoice_id"] is None:
            lots.append(_Lot(tx["transaction_status"] == "granted", int(tx["amount_nanos"])))
        elif tx["transaction_type"] == "outbound":
            _draw(lots, int(tx["amount_nanos"]))
    return _draw(lots, amount)


async def granted_part(conn: AsyncConnection, wallet_id: str, amount: int) -> int:
    """Of `amount` nanos the wallet pays an invoice now, the part granted for free."""
    c = wallet_transactions.c
    query = (
        select(c.transaction_type, c.transaction_status, c.amount_nanos, c.invoice_id)
        .where(c.wallet_id == wallet_id, c.status == "settled")
        .order_by(c.created_at, c.id)
    )
    rows = (await conn.execute(query)).mappings()
    return granted_part_of_draw(rows, amount)
