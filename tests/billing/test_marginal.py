"""Telescoping: for every charge model and every incremental aggregation, the marginal fees of
a period's events, in any order and any batching, sum exactly to the fee of the period."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal as D
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from faregate.billing import charge_models
from faregate.billing.aggregate import EMPTY, Aggregate
from faregate.billing.charge_models import ChargeProperties
from faregate.billing.charges import bucket_fees, charge_aggregates
from faregate.billing.events import Event
from faregate.billing.marginal import event_debit, marginal_fee
from faregate.billing.metrics import BillableMetric, accumulate, aggregate, apply_rounding
from faregate.billing.periods import Period
from faregate.billing.plans import Charge

START = datetime(2025, 1, 1, tzinfo=UTC)
END = datetime(2025, 2, 1, tzinfo=UTC)

amounts = st.integers(0, 5000).map(lambda i: D(i).scaleb(-2))  # 0.00 .. 50.00
values = st.integers(0, 300_000).map(lambda i: D(i).scaleb(-2))  # 0.00 .. 3000.00


@st.composite
def tiers(draw: st.DrawFn, key: str) -> dict[str, object]:
    bounds = sorted(set(draw(st.lists(st.integers(1, 5000), min_size=0, max_size=3))))
    stepped = draw(st.booleans())
    ranges = []
    lower = 0
    for index, upper in enumerate([*bounds, None]):
        start = 0 if index == 0 else lower + (1 if stepped else 0)
        if upper is not None and upper <= start:
            continue
        ranges.append(
            {
                "from_value": start,
                "to_value": upper,
                "per_unit_amount": str(draw(amounts)),
                "flat_amount": str(draw(amounts)),
            }
        )
        lower = upper if upper is not None else lower
    ranges[-1]["to_value"] = None
    return {key: ranges}


@st.composite
def percentage_properties(draw: st.DrawFn) -> dict[str, object]:
    props: dict[str, object] = {"rate": str(draw(amounts)), "fixed_amount": str(draw(amounts))}
    if draw(st.booleans()):
        props["free_units_per_events"] = draw(st.integers(1, 5))
    if draw(st.booleans()):
        props["free_units_per_total_aggregation"] = str(draw(values))
    if draw(st.booleans()):
        low = draw(amounts)
        props["per_transaction_min_amount"] = str(low)
        props["per_transaction_max_amount"] = str(low + draw(amounts))
    return props


PROPERTIES: dict[str, st.SearchStrategy[dict[str, object]]] = {
    "standard": st.builds(lambda a: {"amount": str(a)}, amounts),
    "package": st.builds(
        lambda a, size, free: {"amount": str(a), "package_size": size, "free_units": free},
        amounts,
        st.integers(1, 500),
        st.integers(0, 300),
    ),
    "graduated": tiers("graduated_ranges"),
    "volume": tiers("volume_ranges"),
    "percentage": percentage_properties(),
}


def test_every_registered_charge_model_is_covered_by_the_telescoping_property() -> None:
    assert set(PROPERTIES) == set(charge_models.CHARGE_MODELS)


def metric_for(kind: str, rounding: str | None) -> BillableMetric:
    field = None if kind == "count_agg" else "value"
    data = {"code": "m", "name": "M", "aggregation_type": kind, "field_name": field}
    return BillableMetric.from_dict({**data, "rounding_function": rounding})


def make_events(raw: list[D], kind: str) -> list[Event]:
    """Events an hour apart; unique_count events toggle a handful of users."""
    result = []
    for index, value in enumerate(raw):
        props: dict[str, object] = {"value": value}
        if kind == "unique_count_agg":
            op = "remove" if int(value) % 3 == 0 else "add"
            props = {"value": f"user-{int(value) % 7}", "operation_type": op}
        result.append(Event(f"t{index}", "m", START + timedelta(hours=index), props))
    return result


def telescoping_case(
    model_name: str,
    properties: dict[str, Any],
    metric: BillableMetric,
    events: list[Event],
    cuts: list[bool],
) -> tuple[D, D]:
    """(sum of batch debits, fee of the final aggregate) for events applied in list order."""
    model = charge_models.get(model_name)
    props: ChargeProperties = model.validate(properties)
    running = EMPTY
    debits = D(0)
    batch_before = running
    for index, event in enumerate(events):
        running = accumulate(metric, running, event)
        last = index == len(events) - 1
        if last or (index < len(cuts) and cuts[index]):  # a batch ends: one debit for it
            debits += marginal_fee(
                model, props, apply_rounding(metric, batch_before), apply_rounding(metric, running)
            )
            batch_before = running
    final = aggregate(metric, events, START, END)
    return debits, model.fee(final, props)


def property_for(kind: str, rounding: str | None) -> Callable[..., None]:
    @settings(max_examples=60, deadline=None)
    @given(
        model_name=st.sampled_from(sorted(PROPERTIES)),
        data=st.data(),
        raw=st.lists(values, min_size=1, max_size=25),
        cuts=st.lists(st.booleans(), max_size=25),
    )
    def check(model_name: str, data: st.DataObject, raw: list[D], cuts: list[bool]) -> None:
        properties = data.draw(PROPERTIES[model_name])
        model = charge_models.get(model_name)
        if model.needs_event_values(model.validate(properties)) and kind not in (
            "count_agg",
            "sum_agg",
        ):
            properties = {"rate": properties["rate"]}  # per-event pricing needs count or sum
        metric = metric_for(kind, rounding)
        ordered = data.draw(st.permutations(make_events(raw, kind)))
        if kind in ("latest_agg", "unique_count_agg"):
            ordered = sorted(ordered, key=lambda e: e.timestamp)  # these follow event time
        debits, total = telescoping_case(model_name, properties, metric, ordered, cuts)
        assert debits == total

    return check


test_sum_marginal_fees_telescope_for_every_model = property_for("sum_agg", None)
test_count_marginal_fees_telescope_for_every_model = property_for("count_agg", None)
test_max_marginal_fees_telescope_for_every_model = property_for("max_agg", None)
test_latest_marginal_fees_telescope_for_every_model = property_for("latest_agg", None)
test_unique_count_marginal_fees_telescope_for_every_model = property_for("unique_count_agg", None)
test_rounded_sum_marginal_fees_telescope_for_every_model = property_for("sum_agg", "ceil")


@settings(max_examples=60, deadline=None)
@given(
    model_name=st.sampled_from(["standard", "package", "graduated", "volume"]),
    data=st.data(),
    raw=st.lists(values, min_size=1, max_size=25),
)
def test_the_period_fee_of_order_free_models_does_not_depend_on_event_order(
    model_name: str, data: st.DataObject, raw: list[D]
) -> None:
    model = charge_models.get(model_name)
    props = model.validate(data.draw(PROPERTIES[model_name]))
    metric = metric_for("sum_agg", None)
    events = make_events(raw, "sum_agg")
    shuffled = data.draw(st.permutations(events))
    assert model.fee(aggregate(metric, shuffled, START, END), props) == model.fee(
        aggregate(metric, events, START, END), props
    )


MISTRAL_FILTERS = [
    ({"model": ["mistral-large"], "type": ["input"]}, {"amount": "4", "package_size": 1_000_000}),
    ({"model": ["mistral-large"], "type": ["output"]}, {"amount": "12", "package_size": 1_000_000}),
    ({"model": ["mistral-small"]}, {"amount": "1", "package_size": 1_000_000}),
]


@settings(max_examples=60, deadline=None)
@given(
    usage=st.lists(
        st.tuples(
            st.sampled_from(["mistral-large", "mistral-small", "codestral"]),
            st.sampled_from(["input", "output"]),
            st.integers(0, 900_000),
        ),
        min_size=1,
        max_size=30,
    )
)
def test_event_debits_of_a_filtered_charge_sum_to_its_period_fee(
    usage: list[tuple[str, str, int]],
) -> None:
    charge = Charge.from_dict(
        {
            "billable_metric_code": "tokens",
            "charge_model": "package",
            "properties": {"amount": "0.5", "package_size": 1_000_000},
            "filters": [{"values": v, "properties": p} for v, p in MISTRAL_FILTERS],
        }
    )
    metric = BillableMetric("tokens", "Tokens", "sum_agg", field_name="tokens")
    events = [
        Event(f"t{i}", "tokens", START + timedelta(minutes=i), {"model": m, "type": t, "tokens": n})
        for i, (m, t, n) in enumerate(usage)
    ]
    running: dict[tuple[str, str | None], Aggregate] = {}
    debited = D(0)
    for event in events:
        debit = event_debit(charge, metric, running, event)
        running[debit.key] = debit.after
        debited += debit.amount
    period_fees = bucket_fees(
        charge, charge_aggregates(charge, metric, events, Period.of(START, END))
    )
    assert debited == sum((b.amount for b in period_fees), D(0))
