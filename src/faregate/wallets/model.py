"""Wallets and recurring top-up rules as values, parsed from Lago's JSON with Lago's rules,
and the conversions between credits (what a customer buys) and money (what requests cost):
one credit is worth `rate_amount` units of the wallet's currency. No I/O."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import ROUND_DOWN, Context, Decimal, InvalidOperation
from typing import Any

from faregate.billing import lago_json
from faregate.billing.errors import BillingValidationError
from faregate.billing.lago_json import refuse_unsupported
from faregate.money import from_nanos, to_nanos

CREDIT_PLACES = Decimal("0.00001")  # Lago stores credits as decimal(30,5)
_CREDITS_LIMIT = Decimal(10) ** 25  # and so at most 25 digits before the point
# Credits of a balance at the smallest rate: 2^62 nanos at 5E-16 is ~9E24 credits, and
# five places more (the default context keeps 28 digits).
_CREDITS_DIGITS = Context(prec=40)
# A rate is stored as NUMERIC(30,15): at most 15 digits before the point, and not 0 at 15
# places.
_RATE_LIMIT = Decimal(10) ** 15
_RATE_FLOOR = Decimal("5E-16")
_RATE_DIGITS = Context(prec=30)
TRIGGERS = ("interval", "threshold")
INTERVALS = ("weekly", "monthly", "quarterly", "semiannual", "yearly")
METHODS = ("fixed", "target")


def credits_value(
    data: Mapping[str, object], field: str, *, required: bool = False
) -> Decimal | None:
    """A credits amount from a decimal string or number; never negative."""
    value = data.get(field)
    if value is None or value == "":
        if required:
            raise BillingValidationError(field, "value_is_mandatory")
        return None
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise BillingValidationError(field, "invalid_amount")
    try:
        amount = Decimal(str(value))
    except InvalidOperation:
        raise BillingValidationError(field, "invalid_amount") from None
    if not amount.is_finite() or amount < 0:
        raise BillingValidationError(field, "invalid_amount")
    if amount >= _CREDITS_LIMIT:
        raise BillingValidationError(field, "value_is_out_of_range")
    return amount


def credits_to_nanos(credits: Decimal, rate: Decimal) -> int:
    return to_nanos(credits * rate)


def nanos_to_credits(nanos: int, rate: Decimal) -> Decimal:
    """Credits worth `nanos`, to Lago's five places, rounded toward zero (never overstated)."""
    credits = _CREDITS_DIGITS.divide(from_nanos(nanos), rate)
    return credits.quantize(CREDIT_PLACES, rounding=ROUND_DOWN, context=_CREDITS_DIGITS)


def credits_str(value: Decimal) -> str:
    return format(value.quantize(CREDIT_PLACES, context=_CREDITS_DIGITS), "f")


@dataclass(frozen=True, slots=True)
class Rule:
    """A recurring top-up rule (Lago `recurring_transaction_rules`)."""

    lago_id: str
    trigger: str
    method: str = "fixed"
    interval: str | None = None
    threshold_credits: Decimal | None = None
    target_ongoing_balance: Decimal | None = None
    paid_credits: Decimal = Decimal(0)
    granted_credits: Decimal = Decimal(0)
    started_at: datetime | None = None
    expiration_at: datetime | None = None
    transaction_name: str | None = None
    status: str = "active"
    created_at: str | None = None

    @classmethod
    def from_dict(cls, data: Mapping[str, object], *, created_at: str | None = None) -> Rule:
        trigger = lago_json.optional_str(data, "trigger")
        if trigger not in TRIGGERS:
            raise BillingValidationError("recurring_transaction_rules.trigger", "invalid_value")
        method = lago_json.optional_str(data, "method") or "fixed"
        if method not in METHODS:
            raise BillingValidationError("recurring_transaction_rules.method", "invalid_value")
        interval = lago_json.optional_str(data, "interval")
        if trigger == "interval" and interval not in INTERVALS:
            raise BillingValidationError("recurring_transaction_rules.interval", "invalid_value")
        threshold = credits_value(data, "threshold_credits", required=trigger == "threshold")
        target = credits_value(data, "target_ongoing_balance", required=method == "target")
        if (
            trigger == "threshold"
            and method == "target"
            and target is not None
            and threshold is not None
            and target < threshold
        ):
            raise BillingValidationError(
                "recurring_transaction_rules.target_ongoing_balance", "invalid_recurring_rule"
            )
        return cls(
            lago_id=str(data.get("lago_id") or uuid.uuid4()),
            trigger=trigger,
            method=method,
            interval=interval if trigger == "interval" else None,
            threshold_credits=threshold,
            target_ongoing_balance=target,
            paid_credits=credits_value(data, "paid_credits") or Decimal(0),
            granted_credits=credits_value(data, "granted_credits") or Decimal(0),
            started_at=lago_json.timestamp(data, "started_at"),
            expiration_at=lago_json.timestamp(data, "expiration_at"),
            transaction_name=lago_json.optional_str(data, "transaction_name"),
            status=str(data.get("status") or "active"),
            created_at=created_at or (str(data["created_at"]) if data.get("created_at") else None),
        )

    def to_dict(self) -> dict[str, Any]:
        def opt(v: Decimal | None) -> str | None:
            return None if v is None else credits_str(v)

        return {
            "lago_id": self.lago_id,
            "trigger": self.trigger,
            "method": self.method,
            "interval": self.interval,
            "threshold_credits": opt(self.threshold_credits),
            "target_ongoing_balance": opt(self.target_ongoing_balance),
            "paid_credits": credits_str(self.paid_credits),
            "granted_credits": credits_str(self.granted_credits),
            "started_at": iso_utc(self.started_at),
            "expiration_at": iso_utc(self.expiration_at),
            "transaction_name": self.transaction_name,
            "status": self.status,
            "created_at": self.created_at,
        }

    def in_force(self, now: datetime) -> bool:
        """Active, and `now` is from its `started_at` (if any) until its `expiration_at`."""
        if self.status != "active":
            return False
        if self.started_at is not None and _utc(self.started_at) > _utc(now):
            return False
        return self.expiration_at is None or _utc(self.expiration_at) > _utc(now)

    def top_up_credits(self, ongoing_credits: Decimal) -> tuple[Decimal, Decimal]:
        """(paid, granted) credits this rule adds now: fixed amounts, or for `target` what
        brings the ongoing balance back to the target (paid, or granted when
        `grants_target_top_up`... Lago default: paid)."""
        if self.method == "target":
            gap = (self.target_ongoing_balance or Decimal(0)) - ongoing_credits
            return (max(gap, Decimal(0)).quantize(CREDIT_PLACES), Decimal(0))
        return self.paid_credits, self.granted_credits


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def in_utc(value: datetime | None) -> datetime | None:
    """A client's time in UTC, to store: SQLite keeps a datetime's wall time and drops its
    offset, so 00:00+02:00 read back as 00:00 UTC, two hours late. Naive reads as UTC."""
    return None if value is None else _utc(value).astimezone(UTC)


def iso_utc(value: datetime | None) -> str | None:
    """RFC 3339 in UTC, `...Z`, as every billing resource answers (SQLite gives back naive
    datetimes, stored in UTC: they came out without a zone)."""
    if value is None:
        return None
    return _utc(value).astimezone(UTC).isoformat().replace("+00:00", "Z")


def parse_rules(items: object) -> list[Rule]:
    if items is None:
        return []
    if not isinstance(items, list):
        raise BillingValidationError("recurring_transaction_rules", "invalid_value")
    return [Rule.from_dict(lago_json.mapping(i, "recurring_transaction_rules")) for i in items]


def parse_rate(data: Mapping[str, object]) -> Decimal:
    """A credit's worth: positive, with at most 15 digits before the point (the column is
    NUMERIC(30,15); places past the 15th are rounded when it is stored)."""
    rate = credits_value(data, "rate_amount", required=True)
    if rate is None or rate < _RATE_FLOOR:
        raise BillingValidationError("rate_amount", "invalid_amount")
    if rate >= _RATE_LIMIT:
        raise BillingValidationError("rate_amount", "value_is_out_of_range")
    return rate


def parse_priority(data: Mapping[str, object]) -> int | None:
    value = data.get("priority")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 50:
        raise BillingValidationError("priority", "value_is_invalid")
    return value


def rate_str(rate: Decimal) -> str:
    """A rate as plain text, all of its up to 30 digits (the default context keeps 28)."""
    return format(rate.normalize(_RATE_DIGITS), "f")


# Lago fields faregate does not implement: refused (422 naming the field) unless given their
# default (absent, null, false, empty), never accepted and ignored.
UNSUPPORTED_WALLET_FIELDS = (
    "applies_to",
    "paid_top_up_min_amount_cents",
    "paid_top_up_max_amount_cents",
    "invoice_requires_successful_payment",
)
UNSUPPORTED_RULE_FIELDS = ("invoice_requires_successful_payment", "grants_target_top_up")
UNSUPPORTED_TRANSACTION_FIELDS = ("invoice_requires_successful_payment",)


def refuse_unsupported_wallet_fields(data: Mapping[str, object]) -> None:
    """A wallet's create or update body (its recurring rules included)."""
    refuse_unsupported(data, UNSUPPORTED_WALLET_FIELDS)
    rules = data.get("recurring_transaction_rules")
    if isinstance(rules, list):
        for rule in rules:
            if isinstance(rule, Mapping):
                refuse_unsupported(rule, UNSUPPORTED_RULE_FIELDS, "recurring_transaction_rules.")
