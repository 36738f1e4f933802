"""An `Invoice` as a JSON document and back, exactly: decimals as strings, datetimes as ISO
8601. This is what the invoices table stores, so a stored invoice renders and serializes
without recomputation. No storage, no HTTP."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Any

from faregate.billing.invoices import Fee, Invoice
from faregate.money import decimal_str

_FEE_DECIMALS = ("units", "precise_unit_amount", "precise_amount", "total_aggregated_units")
_FEE_DATETIMES = ("from_datetime", "to_datetime")
_FEE_PLAIN = (
    "fee_type",
    "invoice_display_name",
    "events_count",
    "amount_cents",
    "amount_currency",
    "charge_code",
    "charge_model",
    "billable_metric_code",
    "filter_key",
    "true_up",
)
_INVOICE_INTS = (
    "fees_amount_cents",
    "taxes_amount_cents",
    "sub_total_excluding_taxes_amount_cents",
    "sub_total_including_taxes_amount_cents",
    "prepaid_credit_amount_cents",
    "total_amount_cents",
)
_INVOICE_STRS = (
    "currency",
    "external_customer_id",
    "external_subscription_id",
    "plan_code",
    "status",
    "invoice_type",
)


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _dt(value: object) -> datetime | None:
    return None if value is None else datetime.fromisoformat(str(value))


def fee_document(fee: Fee) -> dict[str, Any]:
    doc: dict[str, Any] = {name: getattr(fee, name) for name in _FEE_PLAIN}
    doc.update({name: decimal_str(getattr(fee, name)) for name in _FEE_DECIMALS})
    doc.update({name: _iso(getattr(fee, name)) for name in _FEE_DATETIMES})
    values = fee.filter_values
    doc["filter_values"] = None if values is None else {k: list(v) for k, v in values.items()}
    return doc


def fee_from_document(doc: dict[str, Any]) -> Fee:
    values = doc.get("filter_values")
    fields: dict[str, Any] = {name: doc.get(name) for name in _FEE_PLAIN}
    fields.update({name: Decimal(doc[name]) for name in _FEE_DECIMALS})
    fields.update({name: datetime.fromisoformat(doc[name]) for name in _FEE_DATETIMES})
    fields["filter_values"] = None if values is None else {k: tuple(v) for k, v in values.items()}
    return Fee(**fields)


def invoice_document(invoice: Invoice) -> dict[str, Any]:
    """The invoice as JSON-safe values (the `document` column)."""
    doc: dict[str, Any] = {
        name: getattr(invoice, name) for name in (*_INVOICE_STRS, *_INVOICE_INTS)
    }
    doc.update(
        issuing_date=invoice.issuing_date.isoformat(),
        from_datetime=_iso(invoice.from_datetime),
        to_datetime=_iso(invoice.to_datetime),
        finalized_at=_iso(invoice.finalized_at),
        tax_rate=decimal_str(invoice.tax_rate),
        fees=[fee_document(fee) for fee in invoice.fees],
        prepaid_granted_credit_amount_cents=invoice.prepaid_granted_credit_amount_cents,
    )
    return doc


def invoice_from_document(doc: dict[str, Any]) -> Invoice:
    fields: dict[str, Any] = {name: doc[name] for name in (*_INVOICE_STRS, *_INVOICE_INTS)}
    fields.update(
        issuing_date=date.fromisoformat(doc["issuing_date"]),
        from_datetime=datetime.fromisoformat(doc["from_datetime"]),
        to_datetime=datetime.fromisoformat(doc["to_datetime"]),
        finalized_at=_dt(doc.get("finalized_at")),
        tax_rate=Decimal(doc["tax_rate"]),
        fees=tuple(fee_from_document(fee) for fee in doc["fees"]),
        # Absent from invoices stored before the split was recorded: not known.
        prepaid_granted_credit_amount_cents=doc.get("prepaid_granted_credit_amount_cents"),
    )
    return Invoice(**fields)
