"""Billable metrics (Lago `billable_metrics`) with Lago's validation rules, and aggregation of
their events into an `Aggregate`: over a period, one event at a time, or by merging rollups."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from decimal import ROUND_CEILING, ROUND_FLOOR, ROUND_HALF_UP, Decimal, localcontext
from typing import Literal, cast

from faregate.billing import aggregations, lago_json
from faregate.billing.aggregate import EMPTY, Aggregate
from faregate.billing.aggregations import Window, seconds_between
from faregate.billing.errors import BillingValidationError
from faregate.billing.events import Event, numeric_property
from faregate.billing.filters import FilterValues, matches
from faregate.money import MAX_USAGE_NUMBER, exact

__all__ = [
    "INCREMENTAL",
    "MERGEABLE",
    "PAYABLE_IN_ADVANCE",
    "Aggregate",
    "BillableMetric",
    "Event",
    "MetricFilter",
    "accumulate",
    "aggregate",
    "apply_rounding",
    "merge",
]

AggregationType = Literal[
    "count_agg", "sum_agg", "max_agg", "unique_count_agg", "latest_agg", "weighted_sum_agg"
]
RoundingFunction = Literal["round", "ceil", "floor"]

# Rollup rows (e.g. hourly) of these can be merged into the period's aggregate.
MERGEABLE = frozenset({"count_agg", "sum_agg", "max_agg", "latest_agg"})
# These can also be extended one event at a time (a wallet's running total). A weighted sum
# depends on the period's end, so it is only ever aggregated over a whole period.
INCREMENTAL = MERGEABLE | {"unique_count_agg"}
PAYABLE_IN_ADVANCE = frozenset({"count_agg", "sum_agg", "unique_count_agg"})
_NOT_RECURRING = frozenset({"count_agg", "max_agg", "latest_agg"})
_ROUNDING = {"round": ROUND_HALF_UP, "ceil": ROUND_CEILING, "floor": ROUND_FLOOR}
# The digits of units apply_rounding works with: a rounded count must fit them.
_ROUNDING_DIGITS = 80
# Lago takes any `rounding_precision` (an int4); faregate takes the steps it can apply to every
# unit count, at most 10^24 and at least 10^-24. An event's value is below MAX_USAGE_NUMBER
# (10^25), so a coarser step rounds every value to 0 or up past that bound; and a count of up
# to 10^56 (far more than any number of events adds up to) rounded to 24 decimals still fits
# in _ROUNDING_DIGITS, where 100000 decimals did not (decimal.InvalidOperation: a 500).
MAX_ROUNDING_PRECISION = MAX_USAGE_NUMBER.adjusted() - 1


@dataclass(frozen=True, slots=True)
class MetricFilter:
    """A dimension charges may filter on: `{"key": "model", "values": ["mistral-large", ...]}`."""

    key: str
    values: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class BillableMetric:
    code: str
    name: str
    aggregation_type: AggregationType
    field_name: str | None = None
    recurring: bool = False
    rounding_function: RoundingFunction | None = None
    rounding_precision: int | None = None
    weighted_interval: Literal["seconds"] | None = None
    filters: tuple[MetricFilter, ...] = ()
    description: str | None = None

    def __post_init__(self) -> None:
        _validate(self)
        if self.aggregation_type == "count_agg":
            object.__setattr__(self, "field_name", None)  # Lago resets it for count
        if self.aggregation_type == "weighted_sum_agg" and self.weighted_interval is None:
            object.__setattr__(self, "weighted_interval", "seconds")  # the only interval

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> BillableMetric:
        """Build from Lago's `billable_metric` JSON; every error names its field."""
        kind = lago_json.choice(data, "aggregation_type", tuple(aggregations.AGGREGATORS))
        if kind is None:
            raise BillingValidationError("aggregation_type", "value_is_mandatory")
        return cls(
            code=lago_json.required_str(data, "code"),
            name=lago_json.required_str(data, "name"),
            aggregation_type=cast(AggregationType, kind),
            field_name=lago_json.optional_str(data, "field_name"),
            recurring=lago_json.flag(data, "recurring"),
            rounding_function=cast(
                RoundingFunction | None,
                lago_json.choice(data, "rounding_function", tuple(_ROUNDING)),
            ),
            rounding_precision=lago_json.optional_int(data, "rounding_precision"),
            weighted_interval=cast(
                Literal["seconds"] | None, lago_json.choice(data, "weighted_interval", ("seconds",))
            ),
            filters=tuple(_metric_filter(item) for item in lago_json.sequence(data, "filters")),
            description=lago_json.optional_str(data, "description", limit=None),
        )

    def filter_values(self, key: str) -> tuple[str, ...] | None:
        return next((f.values for f in self.filters if f.key == key), None)


def _validate(metric: BillableMetric) -> None:
    if not metric.code:
        raise BillingValidationError("code", "value_is_mandatory")
    if not metric.name:
        raise BillingValidationError("name", "value_is_mandatory")
    if metric.aggregation_type not in aggregations.AGGREGATORS:
        raise BillingValidationError("aggregation_type", "value_is_invalid")
    if metric.aggregation_type != "count_agg" and not metric.field_name:
        raise BillingValidationError("field_name", "value_is_mandatory")
    if metric.recurring and metric.aggregation_type in _NOT_RECURRING:
        raise BillingValidationError("recurring", "not_compatible_with_aggregation_type")
    if metric.rounding_function is not None and metric.rounding_function not in _ROUNDING:
        raise BillingValidationError("rounding_function", "value_is_invalid")
    precision = metric.rounding_precision
    if precision is not None and not -MAX_ROUNDING_PRECISION <= precision <= MAX_ROUNDING_PRECISION:
        raise BillingValidationError("rounding_precision", "value_is_out_of_range")
    if metric.weighted_interval not in (None, "seconds"):
        raise BillingValidationError("weighted_interval", "value_is_invalid")
    keys = [f.key for f in metric.filters]
    if len(keys) != len(set(keys)) or any(not f.key or not f.values for f in metric.filters):
        raise BillingValidationError("filters", "invalid_filters")


def _metric_filter(item: object) -> MetricFilter:
    if not isinstance(item, Mapping):
        raise BillingValidationError("filters", "invalid_filters")
    values = item.get("values")
    if (
        not isinstance(item.get("key"), str)
        or not isinstance(values, Sequence)
        or isinstance(values, str)
    ):
        raise BillingValidationError("filters", "invalid_filters")
    if not all(isinstance(v, str) for v in values):
        raise BillingValidationError("filters", "invalid_filters")
    return MetricFilter(str(item["key"]), tuple(str(v) for v in values))


def aggregate(
    metric: BillableMetric,
    events: Iterable[Event],
    period_start: datetime,
    period_end: datetime,
    *,
    filter: FilterValues | None = None,
    carried: Aggregate | None = None,
    period_seconds: Decimal | None = None,
    rounded: bool = True,
) -> Aggregate:
    """Aggregate the metric's events with period_start <= timestamp < period_end.

    `events` come in ingestion order. `filter` keeps only matching events (`{key: value or
    [values]}`). `carried` is the previous period's aggregate, read only by recurring metrics.
    `period_seconds` divides weighted sums (default: the window's length). `rounded=False`
    keeps raw units, for rollups and running totals that are merged or extended later.
    """
    if period_start.utcoffset() is None or period_end.utcoffset() is None:
        raise BillingValidationError("period", "invalid_format", "period bounds need a timezone")
    if period_end <= period_start:
        raise BillingValidationError("period", "invalid_period")
    selected = [
        e
        for e in events
        if e.code == metric.code
        and period_start <= e.timestamp < period_end
        and (filter is None or matches(filter, e.properties))
    ]
    seconds = period_seconds or seconds_between(period_start, period_end)
    aggregator = aggregations.AGGREGATORS[metric.aggregation_type]
    raw = aggregator(
        metric.field_name,
        selected,
        Window(period_start, period_end, seconds),
        carried if metric.recurring else None,
    )
    return apply_rounding(metric, raw) if rounded else raw


def apply_rounding(metric: BillableMetric, raw: Aggregate) -> Aggregate:
    """Lago's rounding_function/rounding_precision, applied to units (never to money)."""
    if metric.rounding_function is None:
        return raw
    exponent = Decimal(1).scaleb(-(metric.rounding_precision or 0))
    with localcontext(prec=_ROUNDING_DIGITS):
        units = raw.units.quantize(exponent, rounding=_ROUNDING[metric.rounding_function])
    return replace(raw, units=units)


@exact
def merge(metric: BillableMetric, parts: Iterable[Aggregate]) -> Aggregate:
    """Combine raw rollup aggregates (e.g. hourly rows, in time order) of a mergeable metric."""
    if metric.aggregation_type not in MERGEABLE:
        raise BillingValidationError("aggregation_type", "not_mergeable")
    result = EMPTY
    for part in parts:
        result = _merge_two(metric.aggregation_type, result, part)
    return result


def _merge_two(kind: str, left: Aggregate, right: Aggregate) -> Aggregate:
    count = left.event_count + right.event_count
    if kind == "max_agg":
        units = (
            right.units
            if right.event_count and (not left.event_count or right.units > left.units)
            else left.units
        )
        return Aggregate(units, count, total_aggregated_units=units)
    if kind == "latest_agg":
        newer = (
            right
            if right.latest_at and (not left.latest_at or right.latest_at >= left.latest_at)
            else left
        )
        return Aggregate(
            newer.units, count, (), newer.total_aggregated_units, latest_at=newer.latest_at
        )
    units = left.units + right.units
    return Aggregate(units, count, left.event_values + right.event_values, units)


@exact
def accumulate(metric: BillableMetric, before: Aggregate, event: Event) -> Aggregate:
    """The raw aggregate after one more event (a wallet's running total). Events that are not
    the metric's are ignored; unique_count applies operations in arrival order."""
    kind = metric.aggregation_type
    if kind not in INCREMENTAL:
        raise BillingValidationError("aggregation_type", "not_incremental")
    if event.code != metric.code:
        return before
    if kind == "unique_count_agg":
        present = set(before.unique_values)
        if not aggregations.toggle(present, event, metric.field_name or ""):
            return before
        units = Decimal(len(present))
        return Aggregate(units, before.event_count + 1, (), units, frozenset(present))
    if kind == "count_agg":
        one = Aggregate(Decimal(1), 1, (Decimal(1),), Decimal(1))
        return _merge_two(kind, before, one)
    value = numeric_property(event, metric.field_name or "")
    if value is None:
        return before
    single = Aggregate(value, 1, (value,), value, latest_at=event.timestamp)
    return _merge_two(kind, before, single)
