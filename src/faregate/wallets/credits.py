"""Prepaid credits on finalized invoices. Wallet debits are taken in real time, request by
request, and telescope to the invoice's charge lines; when an invoice is finalized, the
credits its customer consumed during the invoice's period (and not yet applied to another
invoice of that period) are applied to it (`prepaid_credit_amount_cents`) and recorded as an
outbound `invoiced` wallet transaction. The balance does not move again: it moved with
each request. Runs inside the finalizing transaction."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from faregate.billing.invoices import Invoice
from faregate.money import from_nanos, minor_units, to_nanos
from faregate.store.tables.wallets import wallet_entries, wallet_transactions
from faregate.wallets import repository as repo


async def consumed_between(
    conn: AsyncConnection, wallet_ids: list[str], start: datetime, end: datetime
) -> int:
    c = wallet_entries.c
    query = select(func.coalesce(func.sum(c.consumed_nanos), 0)).where(
        c.wallet_id.in_(wallet_ids), c.created_at >= start, c.created_at < end
    )
    return int((await conn.execute(query)).scalar_one())


def _period(start: datetime, end: datetime) -> list[dict[str, str]]:
    return [
        {"key": "from_datetime", "value": start.isoformat()},
        {"key": "to_datetime", "value": end.isoformat()},
    ]


async def applied_between(
    conn: AsyncConnection, wallet_ids: list[str], start: datetime, end: datetime
) -> int:
    query = select(wallet_transactions.c.amount_nanos, wallet_transactions.c.metadata).where(
        wallet_transactions.c.wallet_id.in_(wallet_ids),
        wallet_transactions.c.transaction_status == "invoiced",
    )
    marker = _period(start, end)
    return sum(int(r[0]) for r in await conn.execute(query) if (r[1] or []) == marker)


class WalletCredits:
    """The invoicing's CreditsApplier for prepaid wallets."""

    async def apply(self, conn: AsyncConnection, invoice: Invoice, invoice_id: str) -> Invoice:
        rows = [
            r
            for r in await repo.wallets_of_customer(conn, invoice.external_customer_id)
            if r["currency"] == invoice.currency
        ]
        if not rows:
            return invoice
        ids = [r["id"] for r in rows]
        start, end = invoice.from_datetime, invoice.to_datetime
        available = await consumed_between(conn, ids, start, end)
        available -= await applied_between(conn, ids, start, end)
        if available <= 0:
            return invoice
        credited = invoice.with_credits(from_nanos(available))
        cents = credited.prepaid_credit_amount_cents
        if cents:
            amount = to_nanos(Decimal(cents).scaleb(-minor_units(invoice.currency)))
            await repo.insert_transaction(
                conn, _invoiced(rows[0]["id"], invoice_id, amount, start, end)
            )
        return credited


def _invoiced(
    wallet_id: str, invoice_id: str, amount: int, start: datetime, end: datetime
) -> dict[str, Any]:
    return {
        "wallet_id": wallet_id,
        "transaction_status": "invoiced",
        "transaction_type": "outbound",
        "source": "manual",
        "amount_nanos": amount,
        "invoice_id": invoice_id,
        "name": "Credits consumed in real time",
        "metadata": _period(start, end),
        "idempotency_key": f"invoice:{invoice_id}",
    }
