"""When interval top-up rules are due. A rule fires at the start of every interval after its
anchor (`started_at`, else the wallet's creation), once: the idempotency key names the
interval, so every replica may check and only one top-up is made. Pure."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from faregate.billing.periods import shift_months
from faregate.wallets.model import Rule

_MONTHS = {"monthly": 1, "quarterly": 3, "semiannual": 6, "yearly": 12}


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def _nth(anchor: datetime, interval: str, n: int) -> datetime:
    if interval == "weekly":
        return anchor + timedelta(weeks=n)
    day = shift_months(anchor.date(), _MONTHS[interval] * n)
    return datetime.combine(day, anchor.timetz())


def due_interval(rule: Rule, wallet_created: datetime, now: datetime) -> int | None:
    """The number of the latest interval boundary passed (1, 2, …), or None when the rule
    has not reached its first boundary, is not an active interval rule, or has expired."""
    if rule.trigger != "interval" or rule.status != "active" or rule.interval is None:
        return None
    now = _utc(now)
    if rule.expiration_at is not None and _utc(rule.expiration_at) <= now:
        return None
    anchor = _utc(rule.started_at or wallet_created)
    n = 0
    while _nth(anchor, rule.interval, n + 1) <= now:
        n += 1
        if n > 10_000:
            break
    return n or None


def interval_key(rule: Rule, n: int) -> str:
    return f"interval:{rule.lago_id}:{n}"
