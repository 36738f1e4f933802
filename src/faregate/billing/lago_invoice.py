"""Lago's JSON for a stored invoice (`invoice` with `fees`, `customer`, `subscriptions`,
`billing_periods`), shared by the REST API and the invoice webhooks. Formats, never computes."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from faregate.billing.catalog_changes import charge_id
from faregate.billing.invoice_document import invoice_from_document
from faregate.billing.invoices import Fee, Invoice
from faregate.money import decimal_str, tax_cents


def iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    if value.utcoffset() is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def customer_object(row: Mapping[str, Any]) -> dict[str, Any]:
    """Lago's `customer` from a customers row."""
    created = iso(row["created_at"])
    return {
        "lago_id": row["id"],
        "external_id": row["external_id"],
        "name": row.get("name"),
        "email": row.get("email"),
        "currency": row.get("currency"),
        "timezone": row.get("timezone"),
        "applicable_timezone": row.get("timezone") or "UTC",
        "created_at": created,
        "updated_at": created,
    }


@dataclass(frozen=True)
class CatalogIds:
    """The lago_ids an invoice's fees name: its plan's (charges' ids derive from it) and its
    metrics', by code. Missing ones (a plan or metric gone) are null."""

    plan_id: str | None = None
    metric_ids: Mapping[str, str] = field(default_factory=dict)

    def charge_id(self, fee: Fee) -> str | None:
        if self.plan_id is None or fee.charge_code is None:
            return None
        return charge_id(self.plan_id, fee.charge_code)


def _fee_object(
    row: Mapping[str, Any], invoice: Invoice, index: int, fee: Fee, ids: CatalogIds
) -> dict[str, Any]:
    charge = fee.fee_type == "charge"
    item_code = fee.billable_metric_code if charge else row["plan_code"]
    # Lago's Fees::ApplyTaxesService: the fee's rounded amount at the rate, rounded.
    taxes = tax_cents(fee.amount_cents, invoice.tax_rate, fee.amount_currency)
    metric_id = ids.metric_ids.get(fee.billable_metric_code or "")
    return {
        "lago_id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"faregate:fee:{row['id']}:{index}")),
        "lago_charge_id": ids.charge_id(fee) if charge else None,
        "lago_charge_filter_id": fee.filter_key,
        "lago_invoice_id": row["id"],
        "lago_true_up_fee_id": None,
        "lago_subscription_id": row["subscription_id"],
        "external_subscription_id": row["external_subscription_id"],
        "lago_customer_id": row.get("customer_id"),
        "external_customer_id": row["external_customer_id"],
        "amount_cents": fee.amount_cents,
        "amount_currency": fee.amount_currency,
        "precise_amount": decimal_str(fee.precise_amount),
        "precise_unit_amount": decimal_str(fee.precise_unit_amount),
        "taxes_amount_cents": taxes,
        "taxes_rate": float(invoice.tax_rate),  # a percentage (Lago: a float column)
        "total_amount_cents": fee.amount_cents + taxes,
        "total_amount_currency": fee.amount_currency,
        "units": decimal_str(fee.units),
        "total_aggregated_units": decimal_str(fee.total_aggregated_units),
        "events_count": fee.events_count,
        "pay_in_advance": False,
        "invoiceable": True,
        "from_date": iso(fee.from_datetime),
        "to_date": iso(fee.to_datetime),
        "amount_details": {},
        "item": {
            "type": fee.fee_type,
            "code": item_code,
            "name": fee.invoice_display_name,
            "invoice_display_name": fee.invoice_display_name,
            "filter_invoice_display_name": fee.invoice_display_name if fee.filter_key else None,
            "filters": None
            if fee.filter_values is None
            else {k: list(v) for k, v in fee.filter_values.items()},
            # Lago's Fee#item_id: the billable metric's id for a charge, else the subscription's.
            "lago_item_id": metric_id if charge else row["subscription_id"],
            "item_type": "BillableMetric" if charge else "Subscription",
            "true_up": fee.true_up,
        },
    }


def _positive(cents: int | None) -> int | None:
    """Lago sets the prepaid credit split only where it is above 0 (else null)."""
    return cents if cents else None


def invoice_number(row: Mapping[str, Any]) -> str:
    """The invoice's `number`: given on finalization; a draft shows a provisional one."""
    return str(row.get("number") or f"DRAFT-{row['id'][:8].upper()}")


def stored_invoice(row: Mapping[str, Any]) -> Invoice:
    return invoice_from_document(row["document"])


def invoice_object(
    row: Mapping[str, Any],
    *,
    customer: Mapping[str, Any] | None = None,
    ids: CatalogIds | None = None,
    file_url: str | None = None,
) -> dict[str, Any]:
    """Lago's `invoice`; `customer` is a customers row, `ids` the lago_ids of its plan and
    metrics."""
    ids = ids or CatalogIds()
    invoice = stored_invoice(row)
    finalized = invoice.status == "finalized"
    total = invoice.total_amount_cents
    return {
        "lago_id": row["id"],
        "sequential_id": row.get("sequential_id"),
        "number": invoice_number(row),
        "issuing_date": invoice.issuing_date.isoformat(),
        "payment_due_date": invoice.issuing_date.isoformat(),
        "payment_overdue": False,
        "payment_dispute_lost_at": None,
        "net_payment_term": 0,
        "invoice_type": invoice.invoice_type,
        "version_number": 4,
        "status": invoice.status,
        "payment_status": "pending" if total > 0 else "succeeded",
        "currency": invoice.currency,
        "fees_amount_cents": invoice.fees_amount_cents,
        "coupons_amount_cents": 0,
        "taxes_amount_cents": invoice.taxes_amount_cents,
        "credit_notes_amount_cents": 0,
        "progressive_billing_credit_amount_cents": 0,
        "sub_total_excluding_taxes_amount_cents": invoice.sub_total_excluding_taxes_amount_cents,
        "sub_total_including_taxes_amount_cents": invoice.sub_total_including_taxes_amount_cents,
        "prepaid_credit_amount_cents": invoice.prepaid_credit_amount_cents,
        # Lago's split of the credits applied (null when none, or not known).
        "prepaid_granted_credit_amount_cents": _positive(
            invoice.prepaid_granted_credit_amount_cents
        ),
        "prepaid_purchased_credit_amount_cents": _positive(
            invoice.prepaid_purchased_credit_amount_cents
        ),
        "total_amount_cents": total,
        "total_due_amount_cents": total if finalized else 0,
        "total_paid_amount_cents": 0,
        "tax_rate": decimal_str(invoice.tax_rate),
        "file_url": file_url,
        "created_at": iso(row["created_at"]),
        "updated_at": iso(row["updated_at"]),
        "finalized_at": iso(invoice.finalized_at),
        "customer": None if customer is None else customer_object(customer),
        "subscriptions": [
            {
                "lago_id": row["subscription_id"],
                "external_id": row["external_subscription_id"],
                "external_customer_id": row["external_customer_id"],
                "lago_customer_id": row.get("customer_id"),
                "plan_code": row["plan_code"],
            }
        ],
        "billing_periods": [
            {
                "lago_subscription_id": row["subscription_id"],
                "external_subscription_id": row["external_subscription_id"],
                "lago_plan_id": ids.plan_id or row["plan_code"],
                "subscription_from_datetime": iso(invoice.from_datetime),
                "subscription_to_datetime": iso(invoice.to_datetime),
                "charges_from_datetime": iso(invoice.from_datetime),
                "charges_to_datetime": iso(invoice.to_datetime),
                "invoicing_reason": row["billing_reason"],
            }
        ],
        "fees": [_fee_object(row, invoice, i, fee, ids) for i, fee in enumerate(invoice.fees)],
        "metadata": [],
        "applied_taxes": [],
    }
