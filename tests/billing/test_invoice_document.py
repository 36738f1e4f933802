"""A stored invoice reads back exactly as it was computed: fees, exact amounts, filters."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson

from faregate.billing.charges import plan_aggregates
from faregate.billing.invoice_document import invoice_document, invoice_from_document
from faregate.billing.invoices import build_invoice
from faregate.billing.periods import first_period
from tests.billing.mistral import mistral_plan
from tests.billing.test_invoices import JANUARY_USAGE, METRICS, subscription


def test_an_invoice_survives_its_json_document_unchanged() -> None:
    plan = mistral_plan(charge={"min_amount_cents": 100_000})
    sub = subscription(plan)
    period = first_period(sub, plan.charges_interval)
    aggregates = plan_aggregates(plan, METRICS, JANUARY_USAGE, period)
    invoice = build_invoice(sub, plan, METRICS, aggregates, period, currency="EUR")
    assert any(f.filter_values for f in invoice.fees) and any(f.true_up for f in invoice.fees)
    stored = orjson.loads(orjson.dumps(invoice_document(invoice)))
    assert invoice_from_document(stored) == invoice
    finalized = invoice.finalize(datetime(2025, 2, 1, tzinfo=UTC))
    assert (
        invoice_from_document(orjson.loads(orjson.dumps(invoice_document(finalized)))) == finalized
    )


def test_the_granted_part_of_the_prepaid_credits_is_kept_and_unknown_before_it_was() -> None:
    from decimal import Decimal

    import pytest

    from faregate.billing.errors import BillingValidationError

    plan = mistral_plan()
    sub = subscription(plan)
    period = first_period(sub, plan.charges_interval)
    aggregates = plan_aggregates(plan, METRICS, JANUARY_USAGE, period)
    draft = build_invoice(sub, plan, METRICS, aggregates, period, currency="EUR")
    credited = draft.with_credits(Decimal(30)).with_granted_credits(1200)
    assert (
        credited.prepaid_granted_credit_amount_cents,
        credited.prepaid_purchased_credit_amount_cents,
    ) == (1200, 1800)
    stored = orjson.loads(orjson.dumps(invoice_document(credited)))
    assert invoice_from_document(stored) == credited
    del stored["prepaid_granted_credit_amount_cents"]  # stored before the split was kept
    old = invoice_from_document(stored)
    assert (old.prepaid_granted_credit_amount_cents, old.prepaid_purchased_credit_amount_cents) == (
        None,
        None,
    )
    with pytest.raises(BillingValidationError):
        credited.with_granted_credits(3001)  # more than the credits applied
    assert credited.with_credits(Decimal(5)).prepaid_granted_credit_amount_cents is None
