"""The result of aggregating a billable metric's events over a period, for one charge bucket.

Every charge model prices an `Aggregate`; it holds no money and imports nothing else of billing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from faregate.money import exact

ZERO = Decimal(0)


@dataclass(frozen=True, slots=True)
class Aggregate:
    """Aggregated units of one (charge, filter) bucket.

    - `units`: what charge models price (Lago's `units`), after the metric's rounding.
    - `event_count`: events aggregated this period (Lago's `events_count`).
    - `event_values`: each event's value in ingestion order (1 per event for count_agg, the
      field value for sum_agg; empty for other aggregations). Only percentage charges with
      free units or per-transaction limits read them.
    - `total_aggregated_units`: the unrounded aggregate; for weighted_sum_agg the running value
      at the end of the period. Recurring sum/weighted sums carry it into the next period.
    - `unique_values`: values present at the end of the period (unique_count_agg, carried over
      when recurring).
    - `latest_at`: timestamp of the value behind latest_agg, so rollup rows can be merged.
    """

    units: Decimal = ZERO
    event_count: int = 0
    event_values: tuple[Decimal, ...] = ()
    total_aggregated_units: Decimal = ZERO
    unique_values: frozenset[str] = frozenset()
    latest_at: datetime | None = None

    @classmethod
    @exact
    def of_values(cls, *values: Decimal) -> Aggregate:
        """A sum_agg aggregate of these event values, in order (handy for pricing and tests)."""
        total = sum(values, ZERO)
        return cls(total, len(values), tuple(values), total)

    @property
    def has_event_values(self) -> bool:
        return len(self.event_values) == self.event_count


EMPTY = Aggregate()
