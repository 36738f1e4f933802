"""Lago's JSON for a wallet and a wallet transaction, from their stored rows (balances are the
ledger's sums kept on the wallet row). No I/O."""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from faregate.money import from_nanos, to_cents
from faregate.wallets.model import credits_str, iso_utc, nanos_to_credits, rate_str


def wallet_json(row: Mapping[str, Any]) -> dict[str, Any]:
    """Lago's wallet object; balances are the ledger's sums held on the row."""
    rate = Decimal(row["rate_amount"])
    currency = row["currency"]
    funded, consumed, held = (int(row[k]) for k in ("funded_nanos", "consumed_nanos", "held_nanos"))
    balance, ongoing = funded - consumed, funded - consumed - held
    return {
        "lago_id": row["id"],
        "lago_customer_id": row["customer_id"],
        "external_customer_id": row["external_customer_id"],
        "status": row["status"],
        "currency": currency,
        "name": row.get("name"),
        "code": row.get("code"),
        "priority": row.get("priority"),
        "rate_amount": rate_str(rate),
        "credits_balance": credits_str(nanos_to_credits(balance, rate)),
        "balance_cents": to_cents(from_nanos(balance), currency),
        "consumed_credits": credits_str(nanos_to_credits(consumed, rate)),
        "consumed_amount_cents": to_cents(from_nanos(consumed), currency),
        "ongoing_balance_cents": to_cents(from_nanos(ongoing), currency),
        "ongoing_usage_balance_cents": to_cents(from_nanos(held), currency),
        "credits_ongoing_balance": credits_str(nanos_to_credits(ongoing, rate)),
        "credits_ongoing_usage_balance": credits_str(nanos_to_credits(held, rate)),
        "created_at": iso_utc(row["created_at"]),
        "expiration_at": iso_utc(row.get("expiration_at")),
        "terminated_at": iso_utc(row.get("terminated_at")),
        "last_balance_sync_at": iso_utc(row.get("updated_at")),
        "last_consumed_credit_at": iso_utc(row.get("last_consumed_credit_at")),
        "recurring_transaction_rules": row.get("recurring_transaction_rules") or [],
        "metadata": row.get("metadata") or {},
        "applies_to": None,
        "invoice_requires_successful_payment": False,
    }


def transaction_json(row: Mapping[str, Any], rate: Decimal) -> dict[str, Any]:
    amount = int(row["amount_nanos"])
    return {
        "lago_id": row["id"],
        "lago_wallet_id": row["wallet_id"],
        "lago_invoice_id": row.get("invoice_id"),
        "lago_credit_note_id": None,
        "lago_voided_invoice_id": None,
        "status": row["status"],
        "source": row["source"],
        "transaction_status": row["transaction_status"],
        "transaction_type": row["transaction_type"],
        "amount": format(from_nanos(amount).normalize(), "f") if amount else "0",
        "credit_amount": credits_str(nanos_to_credits(amount, rate)),
        "settled_at": iso_utc(row.get("settled_at")),
        "failed_at": None,
        "created_at": iso_utc(row["created_at"]),
        "name": row.get("name"),
        "metadata": row.get("metadata") or [],
        "invoice_requires_successful_payment": False,
    }
