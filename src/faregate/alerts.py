"""Operational alerts (budget thresholds, credit thresholds, spend anomalies, …): each one is
logged and sent as an `alert.triggered` webhook. `emit_once` deduplicates through the shared
counter store, so replicas raise an alert once per key. Never raises on a delivery failure."""

# Every alert is one webhook:
#   webhook_type "alert.triggered", object_type "alert",
#   object {"alert_type": "budget.threshold", "triggered_at": "…", …the alert's fields}
# Alert types in use: budget.threshold, budget.exceeded, spend.anomaly, credit.threshold,
# provider.outage and provider.recovered (observability/breaker_alerts.py).

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Protocol

from faregate.store.counters.base import CounterStore

log = logging.getLogger("faregate.alerts")

WEBHOOK_TYPE = "alert.triggered"
OBJECT_TYPE = "alert"
ONCE_TTL_S = 40 * 86400  # an alert key is remembered this long (longer than any period)


def levels_crossed_down(
    before: Decimal, after: Decimal, levels: Sequence[Decimal]
) -> list[Decimal]:
    """The levels a balance fell to or through in one step (before > level >= after)."""
    return sorted((lv for lv in levels if after <= lv < before), reverse=True)


class Webhooks(Protocol):
    async def emit(self, webhook_type: str, object_type: str, obj: dict[str, Any]) -> None: ...


class Alerts:
    """The alert channel handed to budgets, wallets and the spend monitor."""

    def __init__(
        self,
        webhooks: Webhooks | None = None,
        store: CounterStore | None = None,
        *,
        clock: Callable[[], datetime] | None = None,
        prefix: str = "alert-once:",
    ) -> None:
        self._webhooks = webhooks
        self._store = store
        self._clock = clock or (lambda: datetime.now(UTC))
        self._prefix = prefix

    async def emit(self, alert_type: str, payload: Mapping[str, Any]) -> None:
        obj = {"alert_type": alert_type, "triggered_at": self._clock().isoformat(), **payload}
        log.warning("alert %s", alert_type, extra={"alert": obj})
        if self._webhooks is None:
            return
        try:
            await self._webhooks.emit(WEBHOOK_TYPE, OBJECT_TYPE, obj)
        except Exception:  # an alert channel failing must not fail the caller
            log.exception("alert %s could not be queued for delivery", alert_type)

    async def emit_once(
        self, alert_type: str, once_key: str, payload: Mapping[str, Any], ttl_s: float = ONCE_TTL_S
    ) -> bool:
        """Emit unless an alert with this key was already raised (by any replica sharing
        the counter store); returns whether this call emitted it."""
        if self._store is not None:
            seen = await self._store.incr(f"{self._prefix}{alert_type}:{once_key}", 1, ttl_s)
            if seen != 1:
                return False
        await self.emit(alert_type, payload)
        return True

    async def credit_thresholds(
        self,
        wallet: Mapping[str, Any],
        before: Decimal,
        after: Decimal,
        levels: Sequence[Decimal],
        episode: str = "",
    ) -> int:
        """`credit.threshold` once per level a wallet's balance fell through (`episode`,
        e.g. the last top-up's id, lets the same level alert again after a top-up)."""
        raised = 0
        wallet_id = str(wallet.get("lago_id") or wallet.get("id"))
        for level in levels_crossed_down(before, after, levels):
            payload = {
                "wallet": dict(wallet),
                "threshold": str(level),
                "balance": str(after),
            }
            if await self.emit_once("credit.threshold", f"{wallet_id}:{level}:{episode}", payload):
                raised += 1
        return raised
