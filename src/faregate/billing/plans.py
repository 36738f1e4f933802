"""Plans, charges and subscriptions (Lago `plans`, `charges`, `subscriptions`), built from Lago's
JSON and checked with Lago's rules. Values only: storage and the REST API build on these."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal, cast

from faregate.billing import charge_models, lago_json
from faregate.billing.charge_models import ChargeModel, ChargeProperties
from faregate.billing.currencies import is_currency_code
from faregate.billing.errors import BillingNotFound, BillingValidationError
from faregate.billing.filters import ALL_FILTER_VALUES, ChargeFilter, normalize
from faregate.billing.metrics import PAYABLE_IN_ADVANCE, BillableMetric
from faregate.billing.periods import INTERVALS, BillingTime, Interval
from faregate.money import minor_units

__all__ = ["Charge", "ChargeFilter", "Plan", "Subscription", "validate_charge"]

SubscriptionStatus = Literal["pending", "active", "terminated", "canceled"]
_STATUSES = ("pending", "active", "terminated", "canceled")
# What a BIGINT column holds: larger cents would fail the plan's insert (a 500).
MAX_CENTS = 2**63 - 1


def _check_cents(value: object, field: str) -> None:
    """A count of cents: a non-negative integer (`invalid_amount`) a BIGINT holds
    (`value_is_out_of_range`)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise BillingValidationError(field, "invalid_amount")
    if value > MAX_CENTS:
        raise BillingValidationError(field, "value_is_out_of_range")


@dataclass(frozen=True)
class Charge:
    """A priced billable metric on a plan. Events matching one of `filters` are priced with
    that filter's properties; the rest fall into the default bucket, priced with `properties`.
    `min_amount_cents` is a per-charge minimum, trued up on the invoice only."""

    code: str
    billable_metric_code: str
    charge_model: str
    properties: ChargeProperties
    filters: tuple[ChargeFilter, ...] = ()
    min_amount_cents: int = 0
    invoice_display_name: str | None = None
    pay_in_advance: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "filters", tuple(self.filters))
        model = charge_models.get(self.charge_model)
        if not self.code or not self.billable_metric_code:
            raise BillingValidationError(
                "code" if not self.code else "billable_metric", "value_is_mandatory"
            )
        if not isinstance(self.properties, model.properties_type):
            raise BillingValidationError("properties", "invalid_properties")
        if any(not isinstance(f.properties, model.properties_type) for f in self.filters):
            raise BillingValidationError("filters.properties", "invalid_properties")
        if len({f.key for f in self.filters}) != len(self.filters):
            raise BillingValidationError("filters", "duplicated_filter_values")
        _check_cents(self.min_amount_cents, "min_amount_cents")
        if self.pay_in_advance and not model.pay_in_advance:
            raise BillingValidationError("pay_in_advance", "invalid_charge_model")
        if self.pay_in_advance and self.min_amount_cents:
            raise BillingValidationError("min_amount_cents", "not_compatible_with_pay_in_advance")

    @property
    def model(self) -> ChargeModel[Any]:
        return charge_models.get(self.charge_model)

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> Charge:
        """Lago's charge JSON, naming the metric by `billable_metric_code`; `code` defaults to it."""
        model = charge_models.get(str(data.get("charge_model")))
        metric_code = data.get("billable_metric_code")
        if not isinstance(metric_code, str) or not metric_code:
            raise BillingValidationError("billable_metric_code", "value_is_mandatory")
        min_amount = data.get("min_amount_cents") or 0
        return cls(
            code=str(data.get("code") or metric_code),
            billable_metric_code=metric_code,
            charge_model=model.name,
            properties=model.validate(
                lago_json.mapping(data.get("properties") or {}, "properties")
            ),
            filters=tuple(
                _charge_filter(model, item) for item in lago_json.sequence(data, "filters")
            ),
            min_amount_cents=cast(int, min_amount),
            invoice_display_name=lago_json.optional_str(data, "invoice_display_name", limit=None),
            pay_in_advance=lago_json.flag(data, "pay_in_advance"),
        )

    def properties_for(self, charge_filter: ChargeFilter | None) -> ChargeProperties:
        return self.properties if charge_filter is None else charge_filter.properties

    def filter(self, key: str | None) -> ChargeFilter | None:
        """The filter with this `ChargeFilter.key`; None is the default bucket."""
        if key is None:
            return None
        for candidate in self.filters:
            if candidate.key == key:
                return candidate
        raise BillingNotFound("charge_filter", key)

    def display_name(self, metric: BillableMetric) -> str:
        return self.invoice_display_name or metric.name

    def to_dict(self) -> dict[str, object]:
        return {
            "code": self.code,
            "billable_metric_code": self.billable_metric_code,
            "charge_model": self.charge_model,
            "properties": self.properties.to_dict(),
            "filters": [f.to_dict() for f in self.filters],
            "min_amount_cents": self.min_amount_cents,
            "invoice_display_name": self.invoice_display_name,
            "pay_in_advance": self.pay_in_advance,
        }


def _charge_filter(model: ChargeModel[Any], item: object) -> ChargeFilter:
    raw = lago_json.mapping(item, "filters")
    return ChargeFilter(
        values=normalize(lago_json.mapping(raw.get("values"), "filters.values"), "filters.values"),
        properties=model.validate(
            lago_json.mapping(raw.get("properties") or {}, "filters.properties")
        ),
        invoice_display_name=lago_json.optional_str(raw, "invoice_display_name", limit=None),
    )


def validate_charge(charge: Charge, metric: BillableMetric) -> None:
    """Rules that need the metric: filter keys and values it declares, and which aggregations
    a charge model or pay-in-advance accepts (Lago's charge validators). A pay-in-advance
    charge that passes Lago's rules is then refused: faregate does not invoice them."""
    if metric.code != charge.billable_metric_code:
        raise BillingValidationError("billable_metric", "value_is_invalid")
    for charge_filter in charge.filters:
        for key, values in charge_filter.values.items():
            allowed = metric.filter_values(key)
            if allowed is None or not set(values) <= {*allowed, ALL_FILTER_VALUES}:
                raise BillingValidationError(f"filters.values.{key}", "invalid_filter_values")
    kind = metric.aggregation_type
    if charge.charge_model == "percentage" and kind == "latest_agg":
        raise BillingValidationError("billable_metric", "invalid_value")
    if charge.pay_in_advance and kind not in PAYABLE_IN_ADVANCE:
        raise BillingValidationError("pay_in_advance", "invalid_aggregation_type")
    if charge.pay_in_advance:
        # Lago bills such a charge on its own invoice per event; faregate has no such
        # invoice yet, so it refuses the charge instead of never billing it.
        raise BillingValidationError("pay_in_advance", "not_supported")
    priced = (charge.properties, *(f.properties for f in charge.filters))
    if kind not in ("count_agg", "sum_agg") and any(
        charge.model.needs_event_values(p) for p in priced
    ):
        raise BillingValidationError("billable_metric", "invalid_aggregation_type")


@dataclass(frozen=True)
class Plan:
    """A plan: a subscription fee of `amount_cents` per `interval` plus usage charges.
    `trial_period` is accepted and ignored. `bill_charges_monthly` bills the charges of a
    quarterly, semiannual or yearly plan every month."""

    code: str
    name: str
    interval: Interval
    amount_cents: int
    amount_currency: str
    pay_in_advance: bool = False
    bill_charges_monthly: bool | None = None
    trial_period: Decimal | None = None
    charges: tuple[Charge, ...] = ()
    invoice_display_name: str | None = None
    description: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "charges", tuple(self.charges))
        if not self.code or not self.name:
            raise BillingValidationError("code" if not self.code else "name", "value_is_mandatory")
        if self.interval not in INTERVALS:
            raise BillingValidationError("interval", "value_is_invalid")
        _check_cents(self.amount_cents, "amount_cents")
        if not is_currency_code(self.amount_currency):
            raise BillingValidationError("amount_currency", "value_is_invalid")
        object.__setattr__(self, "amount_currency", self.amount_currency.upper())
        if len({c.code for c in self.charges}) != len(self.charges):
            raise BillingValidationError("charges", "duplicated_charge_code")

    @property
    def amount(self) -> Decimal:
        """The subscription fee in currency units."""
        return Decimal(self.amount_cents).scaleb(-minor_units(self.amount_currency))

    @property
    def charges_interval(self) -> Interval:
        monthly = self.bill_charges_monthly and self.interval in (
            "quarterly",
            "semiannual",
            "yearly",
        )
        return "monthly" if monthly else self.interval

    def charge(self, code: str) -> Charge:
        for candidate in self.charges:
            if candidate.code == code:
                return candidate
        raise BillingNotFound("charge", code)

    def validate_metrics(self, metrics_by_code: Mapping[str, BillableMetric]) -> None:
        """Every charge's metric exists (404 otherwise) and accepts the charge."""
        for charge in self.charges:
            metric = metrics_by_code.get(charge.billable_metric_code)
            if metric is None:
                raise BillingNotFound("billable_metric", charge.billable_metric_code)
            validate_charge(charge, metric)

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> Plan:
        amount = data.get("amount_cents", 0)
        return cls(
            code=lago_json.required_str(data, "code"),
            name=lago_json.required_str(data, "name"),
            interval=cast(Interval, data.get("interval")),
            amount_cents=cast(int, amount),
            amount_currency=lago_json.required_str(data, "amount_currency"),
            pay_in_advance=lago_json.flag(data, "pay_in_advance"),
            bill_charges_monthly=lago_json.flag(data, "bill_charges_monthly"),
            charges=tuple(
                Charge.from_dict(c)
                for c in with_charge_codes(
                    [lago_json.mapping(c, "charges") for c in lago_json.sequence(data, "charges")]
                )
            ),
            invoice_display_name=lago_json.optional_str(data, "invoice_display_name", limit=None),
            description=lago_json.optional_str(data, "description", limit=None),
        )


def with_charge_codes(charges: Sequence[Mapping[str, object]]) -> list[Mapping[str, object]]:
    """The charges, each with a `code` (Lago's `Charges::GenerateCodeService`): a charge sent
    without one takes its metric's code, or `<code>_<n>` when that is taken, n one past the
    highest taken (from 2), so several charges may price one metric. Codes sent are taken
    first: a generated code never clashes with one given later in the list (Lago's could)."""
    taken = {str(c["code"]) for c in charges if c.get("code")}
    coded: list[Mapping[str, object]] = []
    for charge in charges:
        base = charge.get("billable_metric_code")
        if charge.get("code") or not isinstance(base, str) or not base:
            coded.append(charge)  # a charge without a metric is refused by Charge.from_dict
            continue
        code = base
        if base in taken:
            suffixes = [
                int(rest)
                for other in taken
                if other.startswith(f"{base}_")
                and (rest := other[len(base) + 1 :]).isascii()
                and rest.isdigit()
            ]
            code = f"{base}_{max(suffixes, default=1) + 1}"
        taken.add(code)
        coded.append({**charge, "code": code})
    return coded


@dataclass(frozen=True, slots=True)
class Subscription:
    """A customer's subscription to a plan. `subscription_at` anchors anniversary billing;
    billing starts at `started_at` (or `subscription_at`) and stops at `ending_at`. `lago_id`
    is its stored row's id (None for one not stored): usage is read by external_id, which
    an earlier subscription may have held, and the row tells whose events are whose."""

    external_id: str
    external_customer_id: str
    plan_code: str
    subscription_at: datetime
    billing_time: BillingTime = "calendar"
    started_at: datetime | None = None
    ending_at: datetime | None = None
    status: SubscriptionStatus = "active"
    name: str | None = None
    lago_id: str | None = None

    def __post_init__(self) -> None:
        for field in ("external_id", "external_customer_id", "plan_code"):
            if not getattr(self, field):
                raise BillingValidationError(field, "value_is_mandatory")
        for field in ("subscription_at", "started_at", "ending_at"):
            value = getattr(self, field)
            if value is not None and value.utcoffset() is None:
                raise BillingValidationError(field, "invalid_format", f"{field} needs a timezone")
        if self.billing_time not in ("calendar", "anniversary"):
            raise BillingValidationError("billing_time", "value_is_invalid")
        if self.status not in _STATUSES:
            raise BillingValidationError("status", "value_is_invalid")
        start = self.started_at or self.subscription_at
        if self.ending_at is not None and self.ending_at <= start:
            raise BillingValidationError("ending_at", "invalid_date")

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> Subscription:
        """Lago's subscription JSON (ISO 8601 datetimes)."""
        return cls(
            external_id=lago_json.required_str(data, "external_id"),
            external_customer_id=lago_json.required_str(data, "external_customer_id"),
            plan_code=lago_json.required_str(data, "plan_code"),
            subscription_at=lago_json.required_timestamp(data, "subscription_at"),
            billing_time=cast(BillingTime, data.get("billing_time") or "calendar"),
            started_at=lago_json.timestamp(data, "started_at"),
            ending_at=lago_json.timestamp(data, "ending_at"),
            status=cast(SubscriptionStatus, data.get("status") or "active"),
            name=lago_json.optional_str(data, "name"),
        )
