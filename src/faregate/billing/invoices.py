"""Invoices of a subscription period: subscription fee, a line per charge bucket, true-ups,
taxes, prepaid credits. Rounding (faregate.money's rule): each line is rounded half-up to the
currency's minor unit, once; every total is a sum of rounded lines. Invoices are frozen values."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import date, datetime
from decimal import Decimal
from typing import Literal, TypedDict

from faregate.billing.aggregate import Aggregate
from faregate.billing.charges import (
    BucketFee,
    BucketKey,
    bucket_fees,
    check_subscription,
    metric_of,
)
from faregate.billing.errors import BillingValidationError, InvoiceNotEditable
from faregate.billing.metrics import BillableMetric
from faregate.billing.periods import Period, first_period, next_period, prorate, subscription_period
from faregate.billing.plans import Charge, Plan, Subscription
from faregate.money import minor_units, tax_cents, to_cents

ZERO = Decimal(0)
# What an invoice's amounts in minor units are stored in: BIGINT columns, and 64-bit integers
# in its JSON document. An invoice past it could not be stored (its billing run failed at the
# insert), so it is refused when built, naming the amount.
MAX_AMOUNT_CENTS = 2**63 - 1
FeeType = Literal["subscription", "charge"]
InvoiceStatus = Literal["draft", "finalized"]


@dataclass(frozen=True)
class Fee:
    """One invoice line (Lago `fees`). `precise_amount` is exact, in currency units;
    `amount_cents` is it rounded. `true_up` marks a minimum-commitment top-up of a charge.
    Lines cover [from_datetime, to_datetime); `precise_unit_amount` is informative only."""

    fee_type: FeeType
    invoice_display_name: str
    units: Decimal
    events_count: int
    precise_unit_amount: Decimal
    precise_amount: Decimal
    amount_cents: int
    amount_currency: str
    from_datetime: datetime
    to_datetime: datetime
    charge_code: str | None = None
    charge_model: str | None = None
    billable_metric_code: str | None = None
    filter_key: str | None = None
    filter_values: Mapping[str, Sequence[str]] | None = None
    total_aggregated_units: Decimal = ZERO
    true_up: bool = False

    @property
    def precise_amount_cents(self) -> Decimal:
        return self.precise_amount.scaleb(minor_units(self.amount_currency))


@dataclass(frozen=True)
class Invoice:
    """Lago's subscription invoice, amounts in minor units of `currency`."""

    currency: str
    external_customer_id: str
    external_subscription_id: str
    plan_code: str
    issuing_date: date
    from_datetime: datetime
    to_datetime: datetime
    fees: tuple[Fee, ...]
    fees_amount_cents: int
    tax_rate: Decimal
    taxes_amount_cents: int
    sub_total_excluding_taxes_amount_cents: int
    sub_total_including_taxes_amount_cents: int
    prepaid_credit_amount_cents: int
    total_amount_cents: int
    status: InvoiceStatus = "draft"
    invoice_type: str = "subscription"
    finalized_at: datetime | None = None
    # Of `prepaid_credit_amount_cents`, what came from credits granted for free (the rest was
    # purchased); None when not known (credits applied before it was recorded).
    prepaid_granted_credit_amount_cents: int | None = None

    @property
    def prepaid_purchased_credit_amount_cents(self) -> int | None:
        granted = self.prepaid_granted_credit_amount_cents
        return None if granted is None else self.prepaid_credit_amount_cents - granted

    def finalize(self, finalized_at: datetime) -> Invoice:
        """The finalized copy; a finalized invoice is never recomputed (Lago: credit notes)."""
        self._require_draft()
        return replace(self, status="finalized", finalized_at=finalized_at)

    def with_credits(self, credits: Decimal) -> Invoice:
        """The draft with prepaid credits re-applied (e.g. after a wallet top-up)."""
        self._require_draft()
        totals = _totals(self.fees, self.currency, self.tax_rate, credits)
        return replace(self, prepaid_granted_credit_amount_cents=None, **totals)

    def with_granted_credits(self, granted_cents: int) -> Invoice:
        """The draft saying how much of its prepaid credits were granted for free."""
        self._require_draft()
        if not 0 <= granted_cents <= self.prepaid_credit_amount_cents:
            raise BillingValidationError("prepaid_granted_credit_amount_cents", "invalid_amount")
        return replace(self, prepaid_granted_credit_amount_cents=granted_cents)

    def _require_draft(self) -> None:
        if self.status != "draft":
            raise InvoiceNotEditable("invoice is finalized")


def build_invoice(
    subscription: Subscription,
    plan: Plan,
    metrics_by_code: Mapping[str, BillableMetric],
    aggregates: Mapping[BucketKey, Aggregate],
    period: Period,
    *,
    currency: str,
    credits: Decimal = ZERO,
    tax_rate: Decimal = ZERO,
) -> Invoice:
    """The draft invoice issued at the end of the charges `period`.

    `aggregates` hold each bucket's usage (see `charges.plan_aggregates`); a missing bucket had
    none. Charges are billed in arrears; pay-in-advance charges are billed event by event
    (their fee is the marginal fee) and left out here. The subscription fee is this period's
    in arrears, or the next period's when the plan is paid in advance; with
    `bill_charges_monthly` it appears only on invoices at the plan interval's boundaries.
    `tax_rate` is a percentage.
    """
    check_subscription(subscription, plan, currency)
    fees = list(_subscription_fee(subscription, plan, period))
    for charge in plan.charges:
        if not charge.pay_in_advance:
            metric = metric_of(charge, metrics_by_code)
            fees.extend(_charge_lines(charge, metric, aggregates, period, currency))
    return _invoice(subscription, plan, period, fees, credits, tax_rate)


def build_opening_invoice(
    subscription: Subscription,
    plan: Plan,
    *,
    currency: str,
    credits: Decimal = ZERO,
    tax_rate: Decimal = ZERO,
) -> Invoice:
    """A pay-in-advance plan's invoice at subscription start: the first period's fee, prorated
    when the first calendar period is partial."""
    check_subscription(subscription, plan, currency)
    if not plan.pay_in_advance:
        raise BillingValidationError("pay_in_advance", "plan_not_paid_in_advance")
    period = first_period(subscription, plan.interval)
    fees = [_subscription_line(plan, period)] if plan.amount_cents else []
    return _invoice(subscription, plan, period, fees, credits, tax_rate)


def _subscription_fee(subscription: Subscription, plan: Plan, period: Period) -> list[Fee]:
    if not plan.amount_cents:
        return []
    if plan.pay_in_advance:
        billed = next_period(subscription, plan.interval, period)
        due = billed is not None and billed.start == period.end
    else:
        billed = subscription_period(subscription, plan.interval, period.start)
        due = billed.end == period.end
    return [_subscription_line(plan, billed)] if due and billed is not None else []


def _subscription_line(plan: Plan, period: Period) -> Fee:
    amount = prorate(plan.amount, period)
    return Fee(
        fee_type="subscription",
        invoice_display_name=plan.invoice_display_name or plan.name,
        units=Decimal(1),
        events_count=0,
        precise_unit_amount=amount,
        precise_amount=amount,
        amount_cents=to_cents(amount, plan.amount_currency),
        amount_currency=plan.amount_currency,
        from_datetime=period.start,
        to_datetime=period.end,
    )


def _charge_lines(
    charge: Charge,
    metric: BillableMetric,
    aggregates: Mapping[BucketKey, Aggregate],
    period: Period,
    currency: str,
) -> list[Fee]:
    """One line per bucket with usage or an amount, then the minimum's true-up if any."""
    lines = [
        _bucket_line(bucket, metric, period, currency)
        for bucket in bucket_fees(charge, aggregates)
        if bucket.aggregate.event_count or bucket.aggregate.units or bucket.amount
    ]
    true_up = _true_up_line(charge, metric, lines, period, currency)
    return lines + ([true_up] if true_up else [])


def _bucket_line(bucket: BucketFee, metric: BillableMetric, period: Period, currency: str) -> Fee:
    usage, charge_filter = bucket.aggregate, bucket.charge_filter
    name = bucket.charge.display_name(metric)
    if charge_filter is not None:
        name = f"{name} • {charge_filter.display_name()}"
    return Fee(
        fee_type="charge",
        invoice_display_name=name,
        units=usage.units,
        events_count=usage.event_count,
        precise_unit_amount=bucket.amount / usage.units if usage.units else ZERO,
        precise_amount=bucket.amount,
        amount_cents=_line_cents(bucket.amount, currency),
        amount_currency=currency,
        from_datetime=period.start,
        to_datetime=period.end,
        charge_code=bucket.charge.code,
        charge_model=bucket.charge.charge_model,
        billable_metric_code=metric.code,
        filter_key=bucket.key[1],
        filter_values=None if charge_filter is None else dict(charge_filter.values),
        total_aggregated_units=usage.total_aggregated_units,
    )


def _true_up_line(
    charge: Charge, metric: BillableMetric, lines: list[Fee], period: Period, currency: str
) -> Fee | None:
    """Lago's true-up: the charge's minimum, prorated over a partial period, less what its
    rounded lines already bill. It is never debited in real time, so real-time debits sum
    to the invoice minus its true-up lines."""
    if not charge.min_amount_cents:
        return None
    minimum = prorate(Decimal(charge.min_amount_cents).scaleb(-minor_units(currency)), period)
    billed = sum(line.amount_cents for line in lines)
    if to_cents(minimum, currency) <= billed:
        return None
    amount = minimum - Decimal(billed).scaleb(-minor_units(currency))
    return Fee(
        fee_type="charge",
        invoice_display_name=f"{charge.display_name(metric)} • minimum",
        units=Decimal(1),
        events_count=0,
        precise_unit_amount=amount,
        precise_amount=amount,
        amount_cents=to_cents(amount, currency),
        amount_currency=currency,
        from_datetime=period.start,
        to_datetime=period.end,
        charge_code=charge.code,
        charge_model=charge.charge_model,
        billable_metric_code=metric.code,
        true_up=True,
    )


def _line_cents(amount: Decimal, currency: str) -> int:
    """A line's amount rounded to the minor unit, within what an invoice stores."""
    # Compared before rounding, exactly: quantizing past 28 digits is InvalidOperation.
    limit = Decimal(MAX_AMOUNT_CENTS + 1).scaleb(-minor_units(currency))
    if not -limit < amount < limit:
        raise BillingValidationError("amount_cents", "value_is_out_of_range")
    return _storable(to_cents(amount, currency), "amount_cents")


def _storable(cents: int, field: str) -> int:
    if not -MAX_AMOUNT_CENTS <= cents <= MAX_AMOUNT_CENTS:
        raise BillingValidationError(field, "value_is_out_of_range")
    return cents


def _invoice(
    subscription: Subscription,
    plan: Plan,
    period: Period,
    fees: list[Fee],
    credits: Decimal,
    tax_rate: Decimal,
) -> Invoice:
    return Invoice(
        currency=plan.amount_currency,
        external_customer_id=subscription.external_customer_id,
        external_subscription_id=subscription.external_id,
        plan_code=plan.code,
        issuing_date=period.end.date(),
        from_datetime=period.start,
        to_datetime=period.end,
        fees=tuple(fees),
        tax_rate=tax_rate,
        **_totals(tuple(fees), plan.amount_currency, tax_rate, credits),
    )


class _Totals(TypedDict):
    fees_amount_cents: int
    taxes_amount_cents: int
    sub_total_excluding_taxes_amount_cents: int
    sub_total_including_taxes_amount_cents: int
    prepaid_credit_amount_cents: int
    total_amount_cents: int


def _totals(fees: tuple[Fee, ...], currency: str, tax_rate: Decimal, credits: Decimal) -> _Totals:
    """Sums of rounded lines; taxes are one rounded amount on the rounded sub-total (Lago
    rounds VAT at invoice level); credits never exceed what is available nor what is due."""
    if credits < 0:
        raise BillingValidationError("credits", "invalid_amount")
    if tax_rate < 0:
        raise BillingValidationError("tax_rate", "invalid_amount")
    exponent = minor_units(currency)
    fees_cents = _storable(sum(fee.amount_cents for fee in fees), "fees_amount_cents")
    taxes = tax_cents(fees_cents, tax_rate, currency)
    including = fees_cents + taxes
    available = to_cents(credits, currency)
    if Decimal(available).scaleb(-exponent) > credits:
        available -= 1  # a sub-cent balance applies down to the cent below, never above
    applied = max(0, min(available, including))
    return {
        "fees_amount_cents": fees_cents,
        "taxes_amount_cents": _storable(taxes, "taxes_amount_cents"),
        "sub_total_excluding_taxes_amount_cents": fees_cents,
        "sub_total_including_taxes_amount_cents": _storable(
            including, "sub_total_including_taxes_amount_cents"
        ),
        "prepaid_credit_amount_cents": applied,
        "total_amount_cents": including - applied,
    }
