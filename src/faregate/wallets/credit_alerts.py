"""Credit-threshold alerts after wallet debits: which configured levels one debit took a
wallet's balance (credits in less credits consumed) to or through. Each debit covers its own
slice of the balance's fall, so every level is crossed by exactly one debit per funding
episode. The alert itself is `faregate.alerts.Alerts.credit_thresholds`. Pure."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any, Protocol

from faregate.alerts import levels_crossed_down
from faregate.wallets.book import Snapshot
from faregate.wallets.model import nanos_to_credits


class CreditAlerts(Protocol):
    """faregate.alerts.Alerts, as far as wallets use it."""

    async def credit_thresholds(
        self,
        wallet: Mapping[str, Any],
        before: Decimal,
        after: Decimal,
        levels: Sequence[Decimal],
        episode: str = "",
    ) -> int: ...


def crossing(
    after: Snapshot, debit: int, rate: Decimal, levels: Sequence[Decimal]
) -> tuple[Decimal, Decimal] | None:
    """The balance in credits (before, after) when the debit of `debit` nanos that left the
    wallet at `after` crossed one of `levels`; None when it crossed none."""
    if not levels:
        return None
    balance = after.funded - after.consumed
    before_credits = nanos_to_credits(balance + debit, rate)
    after_credits = nanos_to_credits(balance, rate)
    if not levels_crossed_down(before_credits, after_credits, levels):
        return None
    return before_credits, after_credits


def episode(after: Snapshot) -> str:
    """A level alerts once per funding episode: the wallet's funding version, which every
    top-up or void changes."""
    return f"v{after.version}"
