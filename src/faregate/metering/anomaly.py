"""Spend anomalies: a day's spend (UTC) over `factor` times its trailing daily average, per
customer, team, key, tag, model or provider (or in total), checked periodically from the
request records and raised once per scope, value and day as a `spend.anomaly` alert."""

# Configuration:
#
# alerts:
#   spend_anomaly:
#     factor: 3              # today over 3x the average of the previous days
#     trailing_days: 7
#     by: [team, customer]   # any spend dimension but day, or "total"
#     basis: cost            # cost | price
#     min_spend: "1.00"      # days below this never alert
#     interval_s: 300

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from faregate.alerts import Alerts
from faregate.config import ConfigError
from faregate.metering.spend import DIMENSIONS, SpendQuery, spend_report
from faregate.money import decimal_str, parse_decimal

TOTAL = "total"


@dataclass(frozen=True, slots=True)
class AnomalyConfig:
    factor: Decimal = Decimal(3)
    trailing_days: int = 7
    by: tuple[str, ...] = (TOTAL,)
    basis: str = "cost"
    min_spend: Decimal = Decimal(0)
    interval_s: float = 300.0

    @classmethod
    def parse(cls, section: Mapping[str, Any] | None) -> AnomalyConfig | None:
        """None when the section is absent or `enabled: false`."""
        if not section or section.get("enabled") is False:
            return None
        by = section.get("by", [TOTAL])
        by = [by] if isinstance(by, str) else list(by)
        bad = [d for d in by if d != TOTAL and (d not in DIMENSIONS or d == "day")]
        if bad or not by:
            raise ConfigError(f"alerts.spend_anomaly.by: unknown dimension(s) {bad}")
        try:
            config = cls(
                factor=parse_decimal(section.get("factor", 3)),
                trailing_days=int(section.get("trailing_days", 7)),
                by=tuple(by),
                basis=str(section.get("basis", "cost")),
                min_spend=parse_decimal(section.get("min_spend", 0)),
                interval_s=float(section.get("interval_s", 300)),
            )
        except (TypeError, ValueError, InvalidOperation):
            raise ConfigError("alerts.spend_anomaly: factor, days, spend must be numbers") from None
        if config.basis not in ("cost", "price"):
            raise ConfigError("alerts.spend_anomaly.basis must be cost or price")
        if config.factor <= 1 or config.trailing_days < 1 or config.interval_s <= 0:
            raise ConfigError("alerts.spend_anomaly: factor > 1, trailing_days >= 1, interval > 0")
        return config


@dataclass(frozen=True, slots=True)
class Anomaly:
    scope: str
    value: str | None
    day: str
    spent: Decimal
    average: Decimal
    factor: Decimal

    def payload(self, basis: str) -> dict[str, Any]:
        return {
            "scope": self.scope,
            "value": self.value,
            "day": self.day,
            "basis": basis,
            "spent": decimal_str(self.spent),
            "trailing_average": decimal_str(self.average),
            "ratio": decimal_str((self.spent / self.average).quantize(Decimal("0.01"))),
            "factor": decimal_str(self.factor),
        }


def find_anomalies(
    scope: str,
    daily: Mapping[str | None, Mapping[str, Decimal]],
    today: str,
    previous: Sequence[str],
    config: AnomalyConfig,
) -> list[Anomaly]:
    """`daily`: value -> day -> spend. A value with no spend before today has no average
    to compare with and never alerts."""
    found = []
    for value, days in daily.items():
        spent = days.get(today, Decimal(0))
        average = sum((days.get(d, Decimal(0)) for d in previous), Decimal(0)) / len(previous)
        if average > 0 and spent >= config.min_spend and spent > config.factor * average:
            found.append(Anomaly(scope, value, today, spent, average, config.factor))
    return found


class SpendMonitor:
    """The periodic check; `check()` is one run (a PeriodicTask calls it)."""

    def __init__(
        self,
        engine: AsyncEngine,
        alerts: Alerts,
        config: AnomalyConfig,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self._engine = engine
        self._alerts = alerts
        self.config = config
        self._clock = clock or (lambda: datetime.now(UTC))

    async def check(self) -> list[Anomaly]:
        now = self._clock().astimezone(UTC)
        start_today = now.replace(hour=0, minute=0, second=0, microsecond=0)
        days = [
            (start_today - timedelta(days=i)).date().isoformat()
            for i in range(self.config.trailing_days, 0, -1)
        ]
        today = start_today.date().isoformat()
        since = start_today - timedelta(days=self.config.trailing_days)
        raised = []
        async with self._engine.connect() as conn:
            reports = {
                scope: await spend_report(
                    conn,
                    SpendQuery(tuple(d for d in (scope, "day") if d != TOTAL), since, now),
                )
                for scope in self.config.by
            }
        for scope, report in reports.items():
            daily: dict[str | None, dict[str, Decimal]] = {}
            for row in report.rows:
                value = None if scope == TOTAL else row[scope]
                daily.setdefault(value, {})[str(row["day"])] = row[self.config.basis]
            for anomaly in find_anomalies(scope, daily, today, days, self.config):
                once = f"{scope}:{anomaly.value}:{today}"
                if await self._alerts.emit_once(
                    "spend.anomaly", once, anomaly.payload(self.config.basis), ttl_s=3 * 86400
                ):
                    raised.append(anomaly)
        return raised
