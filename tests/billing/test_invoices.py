"""Invoices against amounts computed by hand: the Mistral plan per filter, rounding of lines,
taxes, prepaid credits, minimum true-ups, advance and arrears subscription fees, finalization."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from decimal import Decimal as D

import pytest

from faregate.billing.charges import plan_aggregates
from faregate.billing.errors import BillingNotFound, BillingValidationError, InvoiceNotEditable
from faregate.billing.events import Event
from faregate.billing.invoices import Invoice, build_invoice, build_opening_invoice
from faregate.billing.marginal import event_debit
from faregate.billing.metrics import BillableMetric
from faregate.billing.periods import Period, first_period, subscription_period
from faregate.billing.plans import Plan, Subscription
from tests.billing.mistral import mistral_metric, mistral_plan

METRICS = {"tokens": mistral_metric()}


def at(y: int, m: int, d: int, h: int = 0) -> datetime:
    return datetime(y, m, d, h, tzinfo=UTC)


def tokens(when: datetime, model: str, kind: str, count: int, n: int = 0) -> Event:
    return Event(
        f"{when.isoformat()}-{model}-{kind}-{n}",
        "tokens",
        when,
        {"model": model, "type": kind, "tokens": count},
    )


JANUARY_USAGE = [
    tokens(at(2025, 1, 3), "mistral-large", "input", 1_500_000),
    tokens(at(2025, 1, 9), "mistral-large", "input", 1_000_000),
    tokens(at(2025, 1, 9), "mistral-large", "output", 1_000_001),
    tokens(at(2025, 1, 20), "mistral-small", "input", 999_999),
    tokens(at(2025, 1, 21), "codestral", "input", 10),  # no filter: the default bucket
    tokens(at(2025, 2, 1), "mistral-large", "input", 5_000_000),  # next period
]


NEW_YEAR = at(2025, 1, 1)


def subscription(plan: Plan, start: datetime = NEW_YEAR, **kwargs: object) -> Subscription:
    return Subscription(
        external_id="sub-1",
        external_customer_id="acme",
        plan_code=plan.code,
        subscription_at=start,
        **kwargs,  # type: ignore[arg-type]
    )


def invoice_for(
    plan: Plan,
    sub: Subscription,
    period: Period,
    events: list[Event] = JANUARY_USAGE,
    **kwargs: object,
) -> Invoice:
    aggregates = plan_aggregates(plan, METRICS, events, period)
    return build_invoice(sub, plan, METRICS, aggregates, period, currency="EUR", **kwargs)  # type: ignore[arg-type]


def january(plan: Plan, sub: Subscription) -> Period:
    """The subscription's first charges period (all of them start in January)."""
    return first_period(sub, plan.charges_interval)


def lines(invoice: Invoice) -> list[tuple[str, int]]:
    return [(fee.invoice_display_name, fee.amount_cents) for fee in invoice.fees]


def test_the_mistral_plan_bills_each_model_and_type_per_started_million() -> None:
    plan = mistral_plan()
    sub = subscription(plan)
    invoice = invoice_for(plan, sub, january(plan, sub))
    assert lines(invoice) == [
        ("Mistral API", 2000),  # the monthly fee, in arrears
        ("Tokens • mistral-large input", 1200),  # 2.5M tokens: 3 packages x 4
        ("Tokens • mistral-large output", 2400),  # 1,000,001 tokens: 2 packages x 12
        ("Tokens • mistral-small input", 100),  # 999,999 tokens: 1 package x 1
        ("Tokens", 0),  # 10 codestral tokens in the default bucket, priced 0
    ]
    large_input = invoice.fees[1]
    assert (large_input.units, large_input.events_count) == (D(2_500_000), 2)
    assert large_input.filter_values == {"model": ("mistral-large",), "type": ("input",)}
    assert large_input.precise_amount_cents == D(1200)
    assert invoice.fees[0].from_datetime == at(2025, 1, 1)
    assert invoice.fees[0].to_datetime == at(2025, 2, 1)
    assert invoice.fees_amount_cents == 5700
    assert invoice.total_amount_cents == 5700
    assert invoice.issuing_date.isoformat() == "2025-02-01"
    assert invoice.status == "draft"


def test_each_line_is_rounded_half_up_and_totals_sum_the_rounded_lines() -> None:
    half_cent = {"amount": "0.001"}
    plan = mistral_plan(
        charge={
            "charge_model": "standard",
            "properties": {"amount": "0.0000025"},
            "filters": [
                {"values": {"model": ["mistral-large"]}, "properties": half_cent},
                {"values": {"model": ["mistral-small"]}, "properties": half_cent},
            ],
        },
        amount_cents=0,
    )
    sub = subscription(plan)
    events = [
        tokens(at(2025, 1, 2), "mistral-large", "input", 5),  # 0.005 -> 0.01
        tokens(at(2025, 1, 2), "mistral-small", "input", 5),  # 0.005 -> 0.01
        tokens(at(2025, 1, 2), "codestral", "input", 1_234_567),  # 3.0864175 -> 3.09
    ]
    invoice = invoice_for(plan, sub, january(plan, sub), events)
    assert [fee.precise_amount for fee in invoice.fees] == [D("0.005"), D("0.005"), D("3.0864175")]
    assert [fee.amount_cents for fee in invoice.fees] == [1, 1, 309]
    # the sum of rounded lines (311), not the rounded sum (3.0964175 -> 310)
    assert invoice.fees_amount_cents == 311


def test_taxes_are_one_rounded_amount_on_the_subtotal() -> None:
    plan = mistral_plan()
    sub = subscription(plan)
    invoice = invoice_for(plan, sub, january(plan, sub), tax_rate=D("20"), credits=D(10))
    assert invoice.taxes_amount_cents == 1140  # 20% of 57.00
    assert invoice.sub_total_excluding_taxes_amount_cents == 5700
    assert invoice.sub_total_including_taxes_amount_cents == 6840
    assert invoice.prepaid_credit_amount_cents == 1000
    assert invoice.total_amount_cents == 5840


def test_prepaid_credits_are_capped_at_the_amount_due() -> None:
    plan = mistral_plan()
    sub = subscription(plan)
    invoice = invoice_for(plan, sub, january(plan, sub), credits=D(100))
    assert (invoice.prepaid_credit_amount_cents, invoice.total_amount_cents) == (5700, 0)


def test_a_sub_cent_credit_balance_never_applies_more_than_it_holds() -> None:
    plan = mistral_plan()
    sub = subscription(plan)
    invoice = invoice_for(plan, sub, january(plan, sub), credits=D("10.005"))
    assert (invoice.prepaid_credit_amount_cents, invoice.total_amount_cents) == (1000, 4700)


def _per_model(amount: str) -> Plan:
    """A standard charge at `amount` a token, one line per model."""
    per_token = {"amount": amount}
    return mistral_plan(
        charge={
            "charge_model": "standard",
            "properties": per_token,
            "filters": [
                {"values": {"model": [m]}, "properties": per_token}
                for m in ("mistral-large", "mistral-small")
            ],
        },
        amount_cents=0,
    )


def _usage(*counts: int) -> list[Event]:
    models = ("mistral-large", "mistral-small")
    return [tokens(at(2025, 1, 2), m, "input", n) for m, n in zip(models, counts, strict=False)]


@pytest.mark.parametrize(
    ("amount", "counts", "field"),
    [
        ("1000000", [10**14], "amount_cents"),  # 10^22 cents: past a BIGINT
        ("1000000", [10**24], "amount_cents"),  # 10^32 cents: past 28 digits too
        ("0.01", [2**63], "amount_cents"),  # one cent past 2^63 - 1
        ("0.01", [2**63 - 1] * 2, "fees_amount_cents"),  # two lines, each the largest
    ],
)
def test_an_invoice_amount_past_what_an_invoice_stores_is_refused_naming_it(
    amount: str, counts: list[int], field: str
) -> None:
    plan = _per_model(amount)
    sub = subscription(plan)
    with pytest.raises(BillingValidationError) as caught:
        invoice_for(plan, sub, january(plan, sub), _usage(*counts))
    assert (caught.value.field, caught.value.error_code) == (field, "value_is_out_of_range")


def test_the_largest_amount_an_invoice_stores_is_billed() -> None:
    plan = _per_model("0.01")
    sub = subscription(plan)
    invoice = invoice_for(plan, sub, january(plan, sub), _usage(2**63 - 1))
    assert invoice.total_amount_cents == 2**63 - 1


def test_negative_credits_are_refused() -> None:
    plan = mistral_plan()
    sub = subscription(plan)
    with pytest.raises(BillingValidationError) as caught:
        invoice_for(plan, sub, january(plan, sub), credits=D(-1))
    assert caught.value.field == "credits"


def test_a_charge_minimum_is_trued_up_on_its_own_line() -> None:
    plan = mistral_plan(charge={"min_amount_cents": 5000})
    sub = subscription(plan)
    invoice = invoice_for(plan, sub, january(plan, sub))
    true_up = invoice.fees[-1]
    assert (true_up.invoice_display_name, true_up.amount_cents, true_up.true_up) == (
        "Tokens • minimum",
        1300,
        True,
    )
    assert invoice.fees_amount_cents == 2000 + 5000  # usage 37.00 topped up to 50.00


def test_no_true_up_when_usage_exceeds_the_minimum() -> None:
    plan = mistral_plan(charge={"min_amount_cents": 3000})
    sub = subscription(plan)
    assert not any(fee.true_up for fee in invoice_for(plan, sub, january(plan, sub)).fees)


def test_a_partial_first_calendar_period_prorates_the_fee_and_the_minimum() -> None:
    plan = mistral_plan(charge={"min_amount_cents": 5000})
    sub = subscription(plan, start=at(2025, 1, 15))
    events = [tokens(at(2025, 1, 20), "mistral-large", "input", 2_500_000)]
    invoice = invoice_for(plan, sub, january(plan, sub), events)
    assert lines(invoice) == [
        ("Mistral API", 1097),  # 20 x 17/31 = 10.9677...
        ("Tokens • mistral-large input", 1200),
        ("Tokens • minimum", 1542),  # 50 x 17/31 = 27.4193... less 12.00
    ]
    assert invoice.fees[0].from_datetime == at(2025, 1, 15)


def test_a_plan_paid_in_advance_bills_the_first_period_at_start_then_each_next_one() -> None:
    plan = mistral_plan(pay_in_advance=True)
    sub = subscription(plan, start=at(2025, 1, 15))
    opening = build_opening_invoice(sub, plan, currency="EUR")
    assert lines(opening) == [("Mistral API", 1097)]
    assert (opening.fees[0].from_datetime, opening.fees[0].to_datetime) == (
        at(2025, 1, 15),
        at(2025, 2, 1),
    )
    closing = invoice_for(plan, sub, january(plan, sub))
    fee = closing.fees[0]
    assert (fee.amount_cents, fee.from_datetime, fee.to_datetime) == (
        2000,
        at(2025, 2, 1),
        at(2025, 3, 1),
    )
    assert closing.from_datetime == at(2025, 1, 15)  # the charges are January's


def test_a_plan_paid_in_advance_bills_nothing_ahead_when_the_subscription_ends() -> None:
    plan = mistral_plan(pay_in_advance=True)
    sub = subscription(plan, ending_at=at(2025, 2, 1))
    assert [f.fee_type for f in invoice_for(plan, sub, january(plan, sub)).fees] == ["charge"] * 4


def test_the_opening_invoice_needs_a_plan_paid_in_advance() -> None:
    plan = mistral_plan()
    with pytest.raises(BillingValidationError):
        build_opening_invoice(subscription(plan), plan, currency="EUR")


def test_a_termination_mid_period_prorates_the_fee_in_arrears() -> None:
    plan = mistral_plan()
    sub = subscription(plan, ending_at=at(2025, 1, 20))
    period = january(plan, sub)
    assert period.end == at(2025, 1, 20)
    invoice = invoice_for(plan, sub, period)
    assert invoice.fees[0].amount_cents == 1226  # 20 x 19/31 = 12.258...
    assert invoice.fees[-1].invoice_display_name != "Tokens"  # codestral came after the end


def test_anniversary_billing_bills_full_periods_from_the_subscription_date() -> None:
    plan = mistral_plan()
    sub = subscription(plan, start=at(2025, 1, 15), billing_time="anniversary")
    period = january(plan, sub)
    assert (period.start, period.end) == (at(2025, 1, 15), at(2025, 2, 15))
    invoice = invoice_for(plan, sub, period)
    assert invoice.fees[0].amount_cents == 2000
    assert lines(invoice)[1:] == [
        ("Tokens • mistral-large input", 2000),  # Feb 1: 5M tokens, 5 packages x 4
        ("Tokens • mistral-small input", 100),  # Jan 20
        ("Tokens", 0),  # Jan 21; the events before Jan 15 belong to no period of this one
    ]


def test_bill_charges_monthly_puts_the_yearly_fee_on_the_last_monthly_invoice_only() -> None:
    plan = mistral_plan(interval="yearly", bill_charges_monthly=True, amount_cents=24000)
    sub = subscription(plan)
    jan = invoice_for(plan, sub, january(plan, sub))
    assert all(fee.fee_type == "charge" for fee in jan.fees)
    december = subscription_period(sub, "monthly", at(2025, 12, 5))
    dec = invoice_for(plan, sub, december, [])
    fee = dec.fees[0]
    assert (fee.amount_cents, fee.from_datetime, fee.to_datetime) == (
        24000,
        at(2025, 1, 1),
        at(2026, 1, 1),
    )


def test_pay_in_advance_charges_are_left_to_per_event_billing() -> None:
    plan = mistral_plan(charge={"pay_in_advance": True})
    sub = subscription(plan)
    assert lines(invoice_for(plan, sub, january(plan, sub))) == [("Mistral API", 2000)]


def test_event_debits_sum_to_the_invoice_charge_lines() -> None:
    plan = mistral_plan()
    sub = subscription(plan)
    charge, metric = plan.charges[0], METRICS["tokens"]
    running: dict[tuple[str, str | None], object] = {}
    debited = D(0)
    for event in JANUARY_USAGE[:-1]:
        debit = event_debit(charge, metric, running, event)  # type: ignore[arg-type]
        running[debit.key] = debit.after
        debited += debit.amount
    invoice = invoice_for(plan, sub, january(plan, sub))
    assert debited == sum(fee.precise_amount for fee in invoice.fees if fee.fee_type == "charge")
    assert debited == D(37)


def test_finalizing_returns_a_frozen_invoice_that_no_longer_changes() -> None:
    plan = mistral_plan()
    sub = subscription(plan)
    draft = invoice_for(plan, sub, january(plan, sub))
    final = draft.finalize(at(2025, 2, 1, 1))
    assert (final.status, final.finalized_at, draft.status) == (
        "finalized",
        at(2025, 2, 1, 1),
        "draft",
    )
    with pytest.raises(InvoiceNotEditable) as caught:
        final.finalize(at(2025, 2, 2))
    assert caught.value.status == 409
    with pytest.raises(InvoiceNotEditable):
        final.with_credits(D(5))
    with pytest.raises(dataclasses.FrozenInstanceError):
        final.total_amount_cents = 0  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        final.fees[0].amount_cents = 0  # type: ignore[misc]


def test_a_draft_can_take_new_credits() -> None:
    plan = mistral_plan()
    sub = subscription(plan)
    draft = invoice_for(plan, sub, january(plan, sub))
    topped = draft.with_credits(D(7))
    assert (topped.prepaid_credit_amount_cents, topped.total_amount_cents) == (700, 5000)


def test_invoice_inputs_are_checked() -> None:
    plan = mistral_plan()
    sub = subscription(plan)
    period = january(plan, sub)
    with pytest.raises(BillingValidationError) as caught:
        build_invoice(sub, plan, METRICS, {}, period, currency="USD")
    assert caught.value.field == "currency"
    other = dataclasses.replace(sub, plan_code="other")
    with pytest.raises(BillingValidationError):
        build_invoice(other, plan, METRICS, {}, period, currency="EUR")
    with pytest.raises(BillingNotFound):
        build_invoice(sub, plan, {}, {}, period, currency="EUR")


def test_a_plan_without_usage_bills_only_its_fee() -> None:
    plan = mistral_plan()
    sub = subscription(plan)
    assert lines(build_invoice(sub, plan, METRICS, {}, january(plan, sub), currency="eur")) == [
        ("Mistral API", 2000)
    ]


def test_first_period_of_a_weekly_plan_starts_on_monday_for_calendar_billing() -> None:
    plan = mistral_plan(interval="weekly", amount_cents=700)
    sub = subscription(plan, start=at(2025, 1, 1))  # a Wednesday
    period = first_period(sub, "weekly")
    assert (period.days, period.full_days) == (5, 7)
    assert invoice_for(plan, sub, period, []).fees[0].amount_cents == 500  # 7.00 x 5/7


def test_metric_code_mismatch_never_reaches_other_charges() -> None:
    images = BillableMetric("images", "Images", "count_agg")
    plan = mistral_plan()
    assert plan_aggregates(
        plan,
        {**METRICS, "images": images},
        JANUARY_USAGE,
        Period.of(at(2025, 1, 1), at(2025, 2, 1)),
    )
