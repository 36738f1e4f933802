"""Interval top-up rules: due once per interval boundary after their anchor; threshold and
target rules compute what to add and apply only within their window; alert levels parse."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from faregate.billing.errors import BillingValidationError
from faregate.config import ConfigError, load_settings
from faregate.wallets.assembly import alert_levels
from faregate.wallets.model import Rule
from faregate.wallets.topups import due_interval, interval_key

CREATED = datetime(2026, 1, 31, 12, tzinfo=UTC)


def test_a_monthly_rule_is_due_at_each_boundary_after_the_wallet_was_created() -> None:
    rule = Rule.from_dict({"trigger": "interval", "interval": "monthly", "paid_credits": "10"})
    assert due_interval(rule, CREATED, CREATED + timedelta(days=27)) is None
    # January 31st + 1 month is clamped to February 28th.
    assert due_interval(rule, CREATED, datetime(2026, 2, 28, 12, tzinfo=UTC)) == 1
    assert due_interval(rule, CREATED, datetime(2026, 4, 1, tzinfo=UTC)) == 2
    assert interval_key(rule, 2) == f"interval:{rule.lago_id}:2"


def test_a_weekly_rule_starts_from_its_own_start_and_stops_when_it_expires() -> None:
    start = CREATED + timedelta(days=3)
    rule = Rule.from_dict(
        {
            "trigger": "interval",
            "interval": "weekly",
            "granted_credits": "1",
            "started_at": start.isoformat(),
            "expiration_at": (start + timedelta(weeks=3)).isoformat(),
        }
    )
    assert due_interval(rule, CREATED, start + timedelta(days=6)) is None
    assert due_interval(rule, CREATED, start + timedelta(weeks=2, hours=1)) == 2
    assert due_interval(rule, CREATED, start + timedelta(weeks=3)) is None


def test_a_target_rule_tops_up_to_its_target_and_a_fixed_rule_by_its_amounts() -> None:
    target = Rule.from_dict(
        {
            "trigger": "threshold",
            "threshold_credits": "5",
            "method": "target",
            "target_ongoing_balance": "50",
        }
    )
    assert target.top_up_credits(Decimal("3.5")) == (Decimal("46.50000"), Decimal(0))
    fixed = Rule.from_dict(
        {
            "trigger": "threshold",
            "threshold_credits": "5",
            "paid_credits": "20",
            "granted_credits": "2",
        }
    )
    assert fixed.top_up_credits(Decimal(1)) == (Decimal(20), Decimal(2))


def test_a_target_below_its_threshold_is_refused() -> None:
    with pytest.raises(BillingValidationError):
        Rule.from_dict(
            {
                "trigger": "threshold",
                "threshold_credits": "10",
                "method": "target",
                "target_ongoing_balance": "5",
            }
        )


def test_a_threshold_rule_is_in_force_from_its_start_until_its_expiration() -> None:
    start, end = CREATED + timedelta(days=1), CREATED + timedelta(days=10)
    rule = Rule.from_dict(
        {
            "trigger": "threshold",
            "threshold_credits": "5",
            "paid_credits": "20",
            "started_at": start.isoformat(),
            "expiration_at": end.isoformat(),
        }
    )
    assert not rule.in_force(start - timedelta(seconds=1))
    assert rule.in_force(start) and rule.in_force(end - timedelta(seconds=1))
    assert not rule.in_force(end)
    assert Rule.from_dict({"trigger": "threshold", "threshold_credits": "5"}).in_force(CREATED)
    terminated = Rule.from_dict(
        {"trigger": "threshold", "threshold_credits": "5", "status": "terminated"}
    )
    assert not terminated.in_force(CREATED)


def test_alert_levels_are_credit_amounts_highest_first() -> None:
    def levels(raw: object) -> tuple[Decimal, ...]:
        return alert_levels(load_settings(env={}, overrides={"wallets": {"alert_levels": raw}}))

    assert levels(["1", 10, "2.5", "10"]) == (Decimal(10), Decimal("2.5"), Decimal(1))
    assert levels(None) == ()
    for bad in ("10", ["ten"], [True], ["NaN"]):
        with pytest.raises(ConfigError):
            levels(bad)
