"""Prepaid credits on finalized invoices. Wallet debits are taken in real time, request by
request, each naming the subscription whose plan priced it; when an invoice is finalized, the
credits that subscription's requests consumed during the invoice's period (and not yet
settled by another invoice of that subscription and period) are applied to it
(`prepaid_credit_amount_cents`, an outbound `invoiced` wallet transaction). What they consumed
above the invoice (replicas' debits running ahead of it, the sub-cent rest below the cent
applied) is refunded to the wallet, so the customer pays exactly the invoice. Catalog-priced
requests and other subscriptions' usage never pay this invoice. Runs inside the finalizing
transaction."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from faregate.billing.invoices import Invoice
from faregate.money import from_nanos, minor_units, to_cents, to_nanos
from faregate.store.tables.wallets import wallet_entries, wallet_transactions
from faregate.wallets import ledger, transaction_rows
from faregate.wallets import repository as repo
from faregate.wallets.consumption import granted_part


async def consumed_between(
    conn: AsyncConnection,
    wallet_ids: list[str],
    subscription_id: str,
    start: datetime,
    end: datetime,
) -> dict[str, int]:
    """Per wallet: the credits consumed by requests `subscription_id`'s plan priced in
    [start, end)."""
    c = wallet_entries.c
    query = (
        select(c.wallet_id, func.coalesce(func.sum(c.consumed_nanos), 0))
        .where(
            c.wallet_id.in_(wallet_ids),
            c.subscription_id == subscription_id,
            c.created_at >= start,
            c.created_at < end,
        )
        .group_by(c.wallet_id)
    )
    return {r[0]: int(r[1]) for r in await conn.execute(query)}


def _marker(subscription_id: str, start: datetime, end: datetime) -> list[dict[str, str]]:
    return [
        {"key": "from_datetime", "value": start.isoformat()},
        {"key": "to_datetime", "value": end.isoformat()},
        {"key": "external_subscription_id", "value": subscription_id},
    ]


async def settled_between(
    conn: AsyncConnection, wallet_ids: list[str], marker: list[dict[str, str]]
) -> dict[str, int]:
    """Per wallet: credits of this subscription and period already applied to an invoice or
    refunded (a second invoice of the same period settles only the rest)."""
    t = wallet_transactions.c
    query = select(t.wallet_id, t.amount_nanos, t.metadata).where(
        t.wallet_id.in_(wallet_ids), t.invoice_id.is_not(None)
    )
    settled: dict[str, int] = {}
    for wallet_id, amount, metadata in await conn.execute(query):
        if (metadata or []) == marker:
            settled[wallet_id] = settled.get(wallet_id, 0) + int(amount)
    return settled


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
        subscription = invoice.external_subscription_id
        start, end = invoice.from_datetime, invoice.to_datetime
        marker = _marker(subscription, start, end)
        consumed = await consumed_between(conn, ids, subscription, start, end)
        settled = await settled_between(conn, ids, marker)
        left = {i: consumed.get(i, 0) - settled.get(i, 0) for i in ids}
        available = sum(v for v in left.values() if v > 0)
        if available <= 0:
            return invoice
        credited = invoice.with_credits(from_nanos(available))
        cents = credited.prepaid_credit_amount_cents
        to_apply = to_nanos(Decimal(cents).scaleb(-minor_units(invoice.currency)))
        granted = 0
        for wallet_id in ids:  # by priority, as the requests consumed them
            if left[wallet_id] <= 0:
                continue
            share = min(left[wallet_id], to_apply)
            to_apply -= share
            if share:
                granted += await granted_part(conn, wallet_id, share)
                await transaction_rows.insert_transaction(
                    conn, _invoiced(wallet_id, invoice_id, share, marker)
                )
            if left[wallet_id] > share:
                await _refund(conn, wallet_id, invoice_id, left[wallet_id] - share, marker)
        return credited.with_granted_credits(to_cents(from_nanos(granted), invoice.currency))


def _invoiced(
    wallet_id: str, invoice_id: str, amount: int, marker: list[dict[str, str]]
) -> dict[str, Any]:
    return {
        "wallet_id": wallet_id,
        "transaction_status": "invoiced",
        "transaction_type": "outbound",
        "source": "manual",
        "amount_nanos": amount,
        "invoice_id": invoice_id,
        "name": "Credits consumed in real time",
        "metadata": marker,
        "idempotency_key": f"invoice:{invoice_id}:{wallet_id}",
    }


async def _refund(
    conn: AsyncConnection,
    wallet_id: str,
    invoice_id: str,
    amount: int,
    marker: list[dict[str, str]],
) -> None:
    """Give back credits consumed above the invoice: an inbound transaction and its ledger
    entry (funding, like a top-up: every hold book picks it up within a second)."""
    tx = await transaction_rows.insert_transaction(
        conn,
        {
            "wallet_id": wallet_id,
            "transaction_status": "granted",
            "transaction_type": "inbound",
            "source": "manual",
            "amount_nanos": amount,
            "invoice_id": invoice_id,
            "name": "Credits consumed above the invoice, refunded",
            "metadata": marker,
            "idempotency_key": f"refund:{invoice_id}:{wallet_id}",
        },
    )
    if tx is not None:
        subscription = marker[-1]["value"]
        await repo.apply_entries(conn, [ledger.refund(wallet_id, tx["id"], amount, subscription)])
