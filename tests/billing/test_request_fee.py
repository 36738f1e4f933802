"""Per-request prices on a plan: the Mistral plan's marginal fees by hand, and the prices of
a period's requests summing exactly to the invoice's charge lines, in any order."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal as D

from hypothesis import given, settings
from hypothesis import strategies as st

from faregate.billing.charges import plan_aggregates
from faregate.billing.events import Event
from faregate.billing.invoices import build_invoice
from faregate.billing.periods import Period
from faregate.billing.plans import Subscription
from faregate.billing.request_fee import events_of_rows, request_fee, worst_request_fee
from tests.billing.mistral import FEB, JAN, mistral_metric, mistral_plan, per_million

METRICS = {"tokens": mistral_metric()}
PERIOD = Period.of(JAN, FEB)


def request(n: int, model: str, tokens_in: int, tokens_out: int) -> list[Event]:
    at = JAN + timedelta(hours=n)
    return [
        Event(f"req{n}:tokens:{kind}", "tokens", at, {"model": model, "type": kind, "tokens": t})
        for kind, t in (("input", tokens_in), ("output", tokens_out))
    ]


def test_a_request_costs_the_packages_it_starts_on_the_mistral_plan() -> None:
    plan = mistral_plan()  # per started 1M package: large 4 in / 12 out
    first = request_fee(plan, METRICS, request(1, "mistral-large", 600_000, 500_000), {})
    assert first.amount == D(4) + D(12)  # one input package and one output package started
    second = request_fee(
        plan, METRICS, request(2, "mistral-large", 300_000, 100_000), first.running
    )
    assert second.amount == 0  # still inside both packages
    third = request_fee(plan, METRICS, request(3, "mistral-large", 200_000, 0), second.running)
    assert third.amount == D(4)  # 1.1M input tokens: a second input package
    assert len(third.debits) == 2 and third.debits[0].key[0] == "tokens"


def test_a_request_with_no_matching_charge_is_free() -> None:
    events = [Event("r:images", "images", JAN, {"images": 1})]
    assert request_fee(mistral_plan(), METRICS, events, {}).amount == 0


def test_recorded_event_rows_become_billing_events() -> None:
    rows = [
        {
            "transaction_id": "r:tokens:input",
            "code": "tokens",
            "timestamp": JAN,
            "properties": {"tokens": 3},
        },
        {
            "transaction_id": "r:requests",
            "code": "requests",
            "timestamp": "2025-01-01T00:00:00+00:00",
            "properties": None,
        },
    ]
    events = events_of_rows(rows)
    assert events[1].timestamp == datetime(2025, 1, 1, tzinfo=UTC) and events[1].properties == {}


requests_strategy = st.lists(
    st.tuples(
        st.sampled_from(["mistral-large", "mistral-small", "codestral"]),
        st.integers(0, 900_000),
        st.integers(0, 900_000),
    ),
    min_size=1,
    max_size=12,
)


@settings(max_examples=60, deadline=None)
@given(requests_strategy)
def test_request_prices_sum_to_the_invoice_charges(requests: list[tuple[str, int, int]]) -> None:
    plan = mistral_plan()
    running: dict = {}
    total = D(0)
    every: list[Event] = []
    for n, (model, tokens_in, tokens_out) in enumerate(requests):
        events = request(n, model, tokens_in, tokens_out)
        every += events
        priced = request_fee(plan, METRICS, events, running)
        running, total = priced.running, total + priced.amount
    sub = Subscription("sub", "acme", plan.code, JAN)
    invoice = build_invoice(
        sub, plan, METRICS, plan_aggregates(plan, METRICS, every, PERIOD), PERIOD, currency="EUR"
    )
    charges = sum((f.precise_amount for f in invoice.fees if f.fee_type == "charge"), D(0))
    assert total == charges


def _tokens(n: int, kind: str, tokens: int) -> Event:
    props = {"model": "mistral-large", "type": kind, "tokens": tokens}
    return Event(f"req{n}:tokens:{kind}", "tokens", JAN, props)


@settings(max_examples=200, deadline=None)
@given(
    before=st.integers(0, 3_000_000),
    tokens_in=st.integers(0, 2_000_000),
    tokens_out=st.integers(0, 2_000_000),
    cached=st.floats(0, 1),
    reasoning=st.floats(0, 1),
)
def test_the_worst_request_fee_bounds_every_split_of_the_tokens_among_their_types(
    before: int, tokens_in: int, tokens_out: int, cached: float, reasoning: float
) -> None:
    """Package charges per type (cached input and reasoning in a priced default bucket): a
    split of the input between input and cached input, or of the output between output and
    reasoning, can start packages in both buckets; the worst case covers any split."""
    plan = mistral_plan({"properties": per_million("2")})
    running = request_fee(
        plan, METRICS, [_tokens(0, "input", before), _tokens(0, "reasoning", before)], {}
    ).running
    groups = [
        [_tokens(1, "input", tokens_in), _tokens(1, "cached_input", tokens_in)],
        [_tokens(1, "output", tokens_out), _tokens(1, "reasoning", tokens_out)],
    ]
    worst = worst_request_fee(plan, METRICS, groups, running)
    hit = int(tokens_in * cached)
    thought = int(tokens_out * reasoning)
    actual = [
        _tokens(2, "input", tokens_in - hit),
        _tokens(2, "cached_input", hit),
        _tokens(2, "output", tokens_out - thought),
        _tokens(2, "reasoning", thought),
    ]
    assert request_fee(plan, METRICS, actual, running).amount <= worst


def test_the_worst_request_fee_prices_one_bucket_once_per_alternative() -> None:
    plan = mistral_plan({"properties": per_million("2")})  # other types: 2 per started 1M
    groups = [[_tokens(1, "input", 10), _tokens(1, "cached_input", 10)]]
    assert worst_request_fee(plan, METRICS, groups, {}) == D(4) + D(2)  # both buckets
    same_bucket = [[_tokens(1, "cached_input", 10), _tokens(1, "reasoning", 10)]]
    assert worst_request_fee(plan, METRICS, same_bucket, {}) == D(2)  # one package, not two
