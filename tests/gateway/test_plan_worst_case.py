"""The plan worst case a wallet holds (PlanPricer.estimate_call), on plain values: it covers
the price settle gives for any split of the tokens among their types on any reachable
deployment, and finding a kind of request's buckets once gives the same fee as building
its events each time."""

from __future__ import annotations

import dataclasses
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from faregate.auth.principal import Principal
from faregate.billing.billed import Billed
from faregate.billing.metrics import BillableMetric
from faregate.billing.periods import Period
from faregate.billing.plans import Plan, Subscription
from faregate.config import Deployment, ModelGroup
from faregate.gateway.call import Call
from faregate.gateway.plan_pricing import _SCRATCH, PlanPricer, PlanPrices, _Period
from faregate.gateway.plan_worst_case import PlanShape
from faregate.gateway.pricing import CatalogPricer
from faregate.pricing import catalog_from_section
from faregate.routing.health import HealthRegistry
from faregate.routing.router import Router
from faregate.usage import Usage

NOW = datetime.now(UTC)
TOKENS = BillableMetric.from_dict(
    {"code": "tokens", "name": "Tokens", "aggregation_type": "sum_agg", "field_name": "tokens"}
)
PLAN = Plan.from_dict(
    {
        "code": "p",
        "name": "P",
        "interval": "monthly",
        "amount_cents": 0,
        "amount_currency": "USD",
        "charges": [
            {
                "code": "tokens",
                "billable_metric_code": "tokens",
                "charge_model": "package",
                "properties": {"amount": "1", "package_size": 1000, "free_units": 0},
                "filters": [
                    {
                        "values": {"provider": ["b"], "type": ["reasoning"]},
                        "properties": {"amount": "50", "package_size": 100, "free_units": 0},
                    },
                    {
                        "values": {"type": ["cached_input"]},
                        "properties": {"amount": "3", "package_size": 10, "free_units": 0},
                    },
                ],
            }
        ],
    }
)
PRICES = {
    "models": [
        {
            "provider": "x",
            "model": "m",
            "effective_from": "2020-01-01",
            "input": "1",
            "output": "2",
            "max_output_tokens": 500,
        }
    ]
}
GROUP = ModelGroup(
    name="m",
    deployments=(
        Deployment(id="a", group="m", provider="a", model="m"),
        Deployment(id="b", group="m", provider="b", model="m"),
    ),
    strategy="priority",
)


def _pricer() -> tuple[PlanPricer, PlanPrices]:
    inner = CatalogPricer(catalog_from_section(PRICES))
    router = Router({GROUP.name: GROUP}, health=HealthRegistry(), estimator=inner)
    inner.reach = router.reachable
    prices = PlanPrices(engine=None, currency="USD")  # type: ignore[arg-type]
    return PlanPricer(inner, prices), prices


def _state(shape: PlanShape, running: dict[Any, Any] | None = None) -> _Period:
    subscription = Subscription("s", "acme", "p", NOW - timedelta(days=1))
    billed = Billed({}, subscription, PLAN, "p", {"tokens": TOKENS})
    period = Period.of(NOW - timedelta(days=1), NOW + timedelta(days=30))
    return _Period(
        billed, period, dict(running or {}), frozenset({"tokens"}), time.monotonic(), None, shape
    )


def _call(state: _Period, prompt: str, max_tokens: int) -> Call:
    principal = Principal("k", "p", external_customer_id="acme", external_subscription_id="s")
    body = {"model": "m", "messages": [{"role": "user", "content": prompt}]}
    body["max_tokens"] = max_tokens
    call = Call("r", principal, "chat", "m", body, group=GROUP, created_at=NOW)
    call.scratch[_SCRATCH] = state
    return call


@pytest.mark.parametrize(("prompt", "max_tokens"), [("hi", 10), ("x" * 400, 120), ("y", 700)])
def test_finding_the_buckets_once_prices_like_building_the_events(
    prompt: str, max_tokens: int
) -> None:
    pricer, _ = _pricer()
    shape = PlanShape.of(PLAN, {"tokens": TOKENS})
    assert shape == PlanShape(per_deployment=True, per_token_type=True, templated=True)
    templated = _state(shape)
    slow = _state(dataclasses.replace(shape, templated=False))
    for _ in range(2):  # the second time from the kept buckets
        fast_call, slow_call = _call(templated, prompt, max_tokens), _call(slow, prompt, max_tokens)
        pricer.estimate_call(fast_call)
        pricer.estimate_call(slow_call)
        assert fast_call.est_price == slow_call.est_price
    assert templated.templates and not slow.templates


@pytest.mark.parametrize("provider", ["a", "b"])
@pytest.mark.parametrize("reasoning_share", [0, 0.5, 1])
@pytest.mark.parametrize("cached_share", [0, 0.3, 1])
def test_the_hold_covers_every_split_on_every_reachable_deployment(
    provider: str, reasoning_share: float, cached_share: float
) -> None:
    pricer, _ = _pricer()
    state = _state(PlanShape.of(PLAN, {"tokens": TOKENS}))
    call = _call(state, "z" * 200, 300)
    pricer.estimate_call(call)
    held = call.est_price
    assert held is not None
    # What a provider may then report: at most the input and output bounds.
    n, m = call.input_bound, call.est_output_tokens
    call.deployment = next(d for d in GROUP.deployments if d.provider == provider)
    call.usage = Usage(
        input_tokens=n,
        output_tokens=m,
        cached_input_tokens=int(n * cached_share),
        reasoning_tokens=int(m * reasoning_share),
    )
    pricer.settle(call)
    assert call.price <= held
    if provider == "b" and reasoning_share == 1:
        assert call.price > 0 and held >= call.price  # the dearest filter is the bound


def test_reasoning_tokens_on_the_filtered_provider_set_the_hold() -> None:
    pricer, _ = _pricer()
    state = _state(PlanShape.of(PLAN, {"tokens": TOKENS}))
    call = _call(state, "hello", 300)
    pricer.estimate_call(call)
    # Each bucket a token may fall into is priced with all of them: 300 reasoning tokens on
    # `b` (3 packages of 100 at 50), the input as cached input (10-token packages at 3), and
    # input plus visible output in the default bucket (one started package of 1000 at 1).
    assert call.est_output_tokens == 300
    assert call.input_bound == 3 + 4 + 5  # priming, one message's framing, five bytes
    input_packages = -(-call.input_bound // 10)
    assert call.input_bound + 300 <= 1000
    assert call.est_price == Decimal(3 * 50 + 3 * input_packages + 1)
