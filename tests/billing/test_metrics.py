"""Billable metrics: Lago's validation rules, every aggregation computed by hand, filters,
unit rounding, and the incremental and mergeable forms agreeing with a full aggregation."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from decimal import Decimal as D

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from faregate.billing.aggregate import EMPTY, Aggregate
from faregate.billing.errors import BillingValidationError
from faregate.billing.events import Event
from faregate.billing.filters import ALL_FILTER_VALUES
from faregate.billing.metrics import (
    MERGEABLE,
    BillableMetric,
    accumulate,
    aggregate,
    apply_rounding,
    merge,
)

JAN = datetime(2025, 1, 1, tzinfo=UTC)
FEB = datetime(2025, 2, 1, tzinfo=UTC)


def day(n: float) -> datetime:
    return JAN + timedelta(days=n)


def event(at: datetime, code: str = "m", **properties: object) -> Event:
    return Event(f"t-{at.isoformat()}-{properties}", code, at, properties)


def metric(kind: str, **kwargs: object) -> BillableMetric:
    field = None if kind == "count_agg" else "value"
    return BillableMetric(code="m", name="M", aggregation_type=kind, field_name=field, **kwargs)  # type: ignore[arg-type]


# validation (Lago's rules)


def test_field_name_is_required_except_for_count() -> None:
    with pytest.raises(BillingValidationError) as caught:
        BillableMetric(code="m", name="M", aggregation_type="sum_agg")
    assert caught.value.field == "field_name"
    counted = BillableMetric(code="m", name="M", aggregation_type="count_agg", field_name="x")
    assert counted.field_name is None  # reset for count, as Lago does


@pytest.mark.parametrize("kind", ["count_agg", "max_agg", "latest_agg"])
def test_recurring_is_forbidden_with_count_max_and_latest(kind: str) -> None:
    with pytest.raises(BillingValidationError) as caught:
        metric(kind, recurring=True)
    assert caught.value.field == "recurring"


@pytest.mark.parametrize("kind", ["sum_agg", "unique_count_agg", "weighted_sum_agg"])
def test_recurring_is_allowed_with_sum_unique_count_and_weighted_sum(kind: str) -> None:
    assert metric(kind, recurring=True).recurring


def test_weighted_sum_interval_is_seconds() -> None:
    assert metric("weighted_sum_agg").weighted_interval == "seconds"
    with pytest.raises(BillingValidationError) as caught:
        metric("weighted_sum_agg", weighted_interval="days")
    assert caught.value.field == "weighted_interval"


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"name": "M", "aggregation_type": "sum_agg", "field_name": "v"}, "code"),
        ({"code": "m", "name": "M", "aggregation_type": "custom_agg"}, "aggregation_type"),
        (
            {
                "code": "m",
                "name": "M",
                "aggregation_type": "sum_agg",
                "field_name": "v",
                "rounding_function": "up",
            },
            "rounding_function",
        ),
        (
            {
                "code": "m",
                "name": "M",
                "aggregation_type": "count_agg",
                "filters": [{"key": "a", "values": ["x"]}, {"key": "a", "values": ["y"]}],
            },
            "filters",
        ),
        (
            {
                "code": "m",
                "name": "M",
                "aggregation_type": "count_agg",
                "filters": [{"key": "a", "values": "x"}],
            },
            "filters",
        ),
    ],
)
def test_invalid_metrics_name_the_field(data: dict[str, object], field: str) -> None:
    with pytest.raises(BillingValidationError) as caught:
        BillableMetric.from_dict(data)
    assert caught.value.field == field


def test_metric_from_lago_json_keeps_its_filters() -> None:
    tokens = BillableMetric.from_dict(
        {
            "code": "tokens",
            "name": "Tokens",
            "aggregation_type": "sum_agg",
            "field_name": "tokens",
            "filters": [{"key": "model", "values": ["mistral-large", "mistral-small"]}],
        }
    )
    assert tokens.filter_values("model") == ("mistral-large", "mistral-small")
    assert tokens.filter_values("type") is None


# each aggregation


def test_count_counts_the_metric_events_inside_the_period() -> None:
    events = [
        event(day(0)),
        event(day(1)),
        event(day(2), code="other"),
        event(FEB),  # the period's end is excluded
        event(day(-1)),  # before the start
    ]
    result = aggregate(metric("count_agg"), events, JAN, FEB)
    assert (result.units, result.event_count) == (D(2), 2)


def test_sum_adds_the_field_and_ignores_events_without_it() -> None:
    events = [event(day(0), value="1.5"), event(day(1), value=2), event(day(2), other=9)]
    result = aggregate(metric("sum_agg"), events, JAN, FEB)
    assert result.units == D("3.5")
    assert result.event_count == 2
    assert result.event_values == (D("1.5"), D(2))


def test_a_non_numeric_field_value_is_a_validation_error_on_that_property() -> None:
    with pytest.raises(BillingValidationError) as caught:
        aggregate(metric("sum_agg"), [event(day(0), value="lots")], JAN, FEB)
    assert caught.value.field == "properties.value"


def test_recurring_sum_starts_from_the_previous_period_total() -> None:
    previous = Aggregate(units=D(10), event_count=3, total_aggregated_units=D(10))
    result = aggregate(
        metric("sum_agg", recurring=True), [event(day(3), value=5)], JAN, FEB, carried=previous
    )
    assert result.units == D(15)
    metered = aggregate(metric("sum_agg"), [event(day(3), value=5)], JAN, FEB, carried=previous)
    assert metered.units == D(5)  # a metered metric resets each period


def test_max_takes_the_largest_value() -> None:
    events = [event(day(0), value=3), event(day(1), value=7), event(day(2), value=5)]
    assert aggregate(metric("max_agg"), events, JAN, FEB).units == D(7)
    assert aggregate(metric("max_agg"), [], JAN, FEB).units == 0


def test_latest_takes_the_value_with_the_latest_timestamp_not_the_last_received() -> None:
    events = [event(day(5), value=8), event(day(9), value=4), event(day(7), value=6)]
    result = aggregate(metric("latest_agg"), events, JAN, FEB)
    assert result.units == D(4)
    assert result.latest_at == day(9)


def test_unique_count_removes_values_and_ignores_redundant_operations() -> None:
    events = [
        event(day(0), value="u1"),
        event(day(1), value="u2"),
        event(day(2), value="u1"),  # already present: no change
        event(day(3), value="u2", operation_type="remove"),
        event(day(4), value="u3", operation_type="remove"),  # never added: no change
        event(day(5), value="u4", operation_type="add"),
    ]
    result = aggregate(metric("unique_count_agg"), events, JAN, FEB)
    assert result.units == D(2)  # u1 and u4
    assert result.unique_values == frozenset({"u1", "u4"})


def test_recurring_unique_count_carries_the_present_values() -> None:
    previous = Aggregate(units=D(2), unique_values=frozenset({"u1", "u9"}))
    events = [event(day(2), value="u9", operation_type="remove"), event(day(3), value="u5")]
    result = aggregate(
        metric("unique_count_agg", recurring=True), events, JAN, FEB, carried=previous
    )
    assert result.unique_values == frozenset({"u1", "u5"})
    assert result.units == D(2)


def test_unique_count_rejects_an_unknown_operation_type() -> None:
    with pytest.raises(BillingValidationError) as caught:
        aggregate(
            metric("unique_count_agg"), [event(day(0), value="u", operation_type="x")], JAN, FEB
        )
    assert caught.value.field == "properties.operation_type"


def test_weighted_sum_is_the_time_average_of_the_running_level() -> None:
    events = [
        event(day(0), value=10),  # level 10 for days 0-10
        event(day(10), value=5),  # level 15 for days 10-20
        event(day(20), value=-15),  # level 0 for days 20-31
    ]
    result = aggregate(metric("weighted_sum_agg"), events, JAN, FEB)
    # (10 x 10 days + 15 x 10 days) / 31 days = 250/31 = 8.064516129032258064516129...,
    # kept at 20 decimals rounded up, as Lago does
    assert result.units == D("8.06451612903225806452")
    assert result.total_aggregated_units == 0  # the level at the end of the period


def test_recurring_weighted_sum_starts_at_the_previous_level() -> None:
    previous = Aggregate(total_aggregated_units=D(4))
    recurring = metric("weighted_sum_agg", recurring=True)
    assert aggregate(recurring, [], JAN, FEB, carried=previous).units == D(4)
    # level 4 all month, plus 2 for the last 15.5 days: (4 x 31 + 2 x 15.5) / 31 = 5
    rising = aggregate(recurring, [event(day(15.5), value=2)], JAN, FEB, carried=previous)
    assert rising.units == D(5)
    assert rising.total_aggregated_units == D(6)


def test_weighted_sum_over_a_partial_period_is_divided_by_the_full_period() -> None:
    start = datetime(2025, 1, 16, tzinfo=UTC)
    full = D(31 * 86400)
    result = aggregate(
        metric("weighted_sum_agg"), [event(start, value=10)], start, FEB, period_seconds=full
    )
    # 10 held 16 of 31 days: 160/31 = 5.16129032258064516129032..., up at 20 decimals
    assert result.units == D("5.16129032258064516130")


# rounding of units


@pytest.mark.parametrize(
    ("function", "precision", "total", "expected"),
    [
        ("round", 0, "10.4", "10"),
        ("round", 0, "10.5", "11"),
        ("ceil", 0, "10.01", "11"),
        ("floor", 1, "10.46", "10.4"),
        ("round", 2, "0.125", "0.13"),
    ],
)
def test_rounding_applies_to_aggregated_units(
    function: str, precision: int, total: str, expected: str
) -> None:
    rounded = metric("sum_agg", rounding_function=function, rounding_precision=precision)
    result = aggregate(rounded, [event(day(0), value=total)], JAN, FEB)
    assert result.units == D(expected)
    assert result.total_aggregated_units == D(total)


@pytest.mark.parametrize("precision", [100_000, 10**9, 25, -25])
def test_a_rounding_precision_past_24_digits_either_way_is_refused(precision: int) -> None:
    # 100000 decimals was decimal.InvalidOperation at every usage read; -25 rounds an event's
    # value (below 10^25) to 0 or up past what a usage number may be.
    with pytest.raises(BillingValidationError) as raised:
        metric("sum_agg", rounding_function="ceil", rounding_precision=precision)
    assert (raised.value.field, raised.value.error_code) == (
        "rounding_precision",
        "value_is_out_of_range",
    )


@pytest.mark.parametrize(
    ("function", "precision", "total", "expected"),
    [
        ("ceil", -24, "5", "1E+24"),
        ("floor", -24, "9" * 24, "0"),
        ("round", 24, "0." + "0" * 23 + "15", "0." + "0" * 23 + "2"),
        ("ceil", 24, "9" * 24 + "." + "1" * 30, "9" * 24 + "." + "1" * 23 + "2"),
    ],
)
def test_the_largest_rounding_precisions_round_the_largest_counts(
    function: str, precision: int, total: str, expected: str
) -> None:
    # max_agg: the count is the event's value itself, all 54 digits of it.
    rounded = metric("max_agg", rounding_function=function, rounding_precision=precision)
    result = aggregate(rounded, [event(day(0), value=total)], JAN, FEB)
    assert result.units == D(expected)


# filters


def test_a_filter_selects_events_with_one_of_its_values_for_every_key() -> None:
    events = [
        event(day(0), value=1, model="mistral-large", type="input"),
        event(day(1), value=10, model="mistral-large", type="output"),
        event(day(2), value=100, model="mistral-small", type="input"),
        event(day(3), value=1000, type="input"),  # no model: matches no model filter
    ]
    sums = metric("sum_agg")
    assert aggregate(sums, events, JAN, FEB, filter={"model": "mistral-large"}).units == 11
    large_input = {"model": ["mistral-large"], "type": ["input"]}
    assert aggregate(sums, events, JAN, FEB, filter=large_input).units == 1
    both = {"model": ["mistral-large", "mistral-small"], "type": "input"}
    assert aggregate(sums, events, JAN, FEB, filter=both).units == 101
    anything = {"model": [ALL_FILTER_VALUES]}
    assert aggregate(sums, events, JAN, FEB, filter=anything).units == 111


def test_naive_datetimes_are_refused() -> None:
    with pytest.raises(BillingValidationError):
        Event("t", "m", datetime(2025, 1, 1), {})
    with pytest.raises(BillingValidationError):
        aggregate(metric("count_agg"), [], datetime(2025, 1, 1), datetime(2025, 2, 1))


# incremental and mergeable forms

timed_values = st.lists(
    st.tuples(st.integers(0, 31 * 24 - 1), st.integers(-500, 5000).map(lambda i: D(i).scaleb(-1))),
    max_size=40,
)


@settings(max_examples=80, deadline=None)
@given(rows=timed_values, kind=st.sampled_from(sorted(MERGEABLE)))
def test_hourly_rollups_merge_into_the_period_aggregate(
    rows: list[tuple[int, D]], kind: str
) -> None:
    m = metric(kind)
    events = [event(JAN + timedelta(hours=h), value=v) for h, v in rows]
    hours = [JAN + timedelta(hours=h) for h in range(31 * 24 + 1)]
    parts = [aggregate(m, events, a, b, rounded=False) for a, b in itertools.pairwise(hours)]
    merged = merge(m, parts)
    whole = aggregate(m, events, JAN, FEB, rounded=False)
    assert (merged.units, merged.event_count) == (whole.units, whole.event_count)


@settings(max_examples=80, deadline=None)
@given(rows=timed_values, kind=st.sampled_from([*sorted(MERGEABLE), "unique_count_agg"]))
def test_accumulating_events_in_time_order_gives_the_period_aggregate(
    rows: list[tuple[int, D]], kind: str
) -> None:
    m = metric(kind)
    events = sorted(
        (
            event(
                JAN + timedelta(hours=h),
                value=f"u{abs(int(v)) % 5}" if kind == "unique_count_agg" else v,
                operation_type="remove" if v < 0 else "add",
            )
            for h, v in rows
        ),
        key=lambda e: e.timestamp,
    )
    running = EMPTY
    for e in events:
        running = accumulate(m, running, e)
    whole = aggregate(m, events, JAN, FEB, rounded=False)
    assert (running.units, running.event_count) == (whole.units, whole.event_count)
    assert running.event_values == whole.event_values


def test_weighted_sum_is_neither_mergeable_nor_incremental() -> None:
    weighted = metric("weighted_sum_agg")
    with pytest.raises(BillingValidationError):
        merge(weighted, [EMPTY])
    with pytest.raises(BillingValidationError):
        accumulate(weighted, EMPTY, event(day(0), value=1))


def test_rounding_is_applied_after_merging_raw_rollups() -> None:
    ceiled = metric("sum_agg", rounding_function="ceil")
    parts = [Aggregate(D("0.4"), 1, (D("0.4"),), D("0.4"))] * 3
    assert apply_rounding(ceiled, merge(ceiled, parts)).units == D(
        2
    )  # ceil(1.2), not 3 x ceil(0.4)
