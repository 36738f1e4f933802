"""The worst-case estimate behind budget and wallet holds (CatalogPricer.estimate_call with
the router's reach), computed by hand: which deployments it covers, the output bound and the
service tier. Plain values, no servers."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from faregate.auth.principal import Principal
from faregate.config import Deployment, ModelGroup
from faregate.gateway.call import Call
from faregate.gateway.pricing import CatalogPricer
from faregate.pricing import catalog_from_section
from faregate.routing.health import HealthRegistry
from faregate.routing.router import Router

MILLION = Decimal(10**6)


def _price(model: str, rate: str, **extra: Any) -> dict[str, Any]:
    return {
        "provider": "xtest",
        "model": model,
        "effective_from": "2020-01-01",
        "input": rate,
        "output": rate,
        **extra,
    }


PRICES = {
    "models": [
        _price("cheap", "1", max_output_tokens=1000),
        _price("dear", "100", max_output_tokens=2000, tiers={"priority": 2}),
        _price("unlimited", "1"),
    ]
}


def _group(name: str, model: str, **kw: Any) -> ModelGroup:
    deployment = Deployment(id=f"{name}-dep", group=name, provider="p", model=model)
    return ModelGroup(name=name, deployments=(deployment,), **kw)


def _pricer(*groups: ModelGroup) -> tuple[CatalogPricer, Router]:
    pricer = CatalogPricer(catalog_from_section(PRICES))
    router = Router({g.name: g for g in groups}, health=HealthRegistry(), estimator=pricer)
    pricer.reach = router.reachable
    return pricer, router


def _estimate(pricer: CatalogPricer, router: Router, model: str, **body: Any) -> Call:
    payload = {"model": model, "messages": [{"role": "user", "content": "x" * 36}], **body}
    tags = tuple(payload.pop("tags", ()))
    call = Call("r", Principal("k", "p"), "chat", model, payload, tags=tags)
    call.group = router.resolve(model)
    pricer.estimate_call(call)
    return call


# The input bound: reply priming + one message's framing + 36 one-byte characters.
PROMPT = 3 + 4 + 36


def _cost(rate: int, output: int) -> Decimal:
    return Decimal(rate * (PROMPT + output)) / MILLION


TIERED = {"rules": [{"match": {"tags": ["final"]}, "group": "premium"}], "default": "draft"}


def test_a_tiered_request_holds_the_group_its_rules_pick() -> None:
    pricer, router = _pricer(
        _group("auto", "cheap", strategy="tiered", strategy_options=TIERED),
        _group("draft", "cheap"),
        _group("premium", "dear"),
    )
    final = _estimate(pricer, router, "auto", max_tokens=100, tags=["final"])
    assert final.est_cost == _cost(100, 100)
    draft = _estimate(pricer, router, "auto", max_tokens=100)
    assert draft.est_cost == _cost(1, 100)  # a draft can never reach the premium group


def test_fallback_and_context_window_groups_are_held_too() -> None:
    for link in ("fallbacks", "context_window_fallbacks"):
        pricer, router = _pricer(_group("chat", "cheap", **{link: ("big",)}), _group("big", "dear"))
        call = _estimate(pricer, router, "chat", max_tokens=10)
        assert call.est_cost == _cost(100, 10), link


@pytest.mark.parametrize(
    ("body", "output"),
    [
        ({}, 2000),  # no cap: the model's whole limit
        ({"max_tokens": 50}, 50),
        ({"max_completion_tokens": 70, "max_tokens": 50}, 70),
        ({"max_tokens": 50_000}, 2000),  # the provider cannot write past its limit
        ({"max_tokens": 30, "n": 3}, 90),
    ],
)
def test_the_output_bound_is_the_clients_cap_within_the_models_limit(
    body: dict[str, Any], output: int
) -> None:
    pricer, router = _pricer(_group("chat", "dear"))
    call = _estimate(pricer, router, "chat", **body)
    assert call.est_output_tokens == output
    assert call.est_cost == _cost(100, output)


def test_a_deployments_own_output_limit_and_the_default_bound() -> None:
    declared = Deployment(
        id="d", group="chat", provider="p", model="unlimited", max_output_tokens=300
    )
    pricer, router = _pricer(
        ModelGroup(name="chat", deployments=(declared,)), _group("other", "unlimited")
    )
    assert _estimate(pricer, router, "chat").est_output_tokens == 300
    assert _estimate(pricer, router, "other").est_output_tokens == 4096


@pytest.mark.parametrize(
    ("tier", "multiplier"),
    [(None, 1), ("default", 1), ("auto", 1), ("priority", 2), ("fast", 2), ("flex", 1)],
)
def test_the_hold_carries_the_requested_service_tier(tier: str | None, multiplier: int) -> None:
    pricer, router = _pricer(_group("chat", "dear"))
    body = {"max_tokens": 10} | ({"service_tier": tier} if tier else {})
    call = _estimate(pricer, router, "chat", **body)
    assert call.est_cost == _cost(100, 10) * multiplier  # flex is not declared: standard


def test_a_deployment_tier_applies_when_the_request_names_none() -> None:
    priority = Deployment(id="d", group="chat", provider="p", model="dear", tier="priority")
    pricer, router = _pricer(ModelGroup(name="chat", deployments=(priority,)))
    assert _estimate(pricer, router, "chat", max_tokens=10).est_cost == _cost(100, 10) * 2
    plain = _estimate(pricer, router, "chat", max_tokens=10, service_tier="default")
    assert plain.est_cost == _cost(100, 10)


def test_routing_prices_the_expected_input_while_the_hold_prices_its_bound() -> None:
    pricer, router = _pricer(_group("chat", "dear"))
    call = _estimate(pricer, router, "chat", max_tokens=10)
    assert (call.est_input_tokens, call.input_bound) == (3 + 4 + 9, PROMPT)  # 36 chars / 4
    assert call.est_cost == _cost(100, 10)
    [deployment] = call.group.deployments if call.group else ()
    expected = pricer.estimate(deployment, pricer.route_request(call))
    assert expected == Decimal(100 * (3 + 4 + 9 + 10)) / MILLION  # what cheapest and max_price see


def test_a_model_without_a_known_limit_is_held_at_the_groups_largest_one() -> None:
    unlimited = Deployment(id="u", group="chat", provider="p", model="unlimited")
    dear = Deployment(id="d", group="chat", provider="p", model="dear")
    pricer, router = _pricer(ModelGroup(name="chat", deployments=(unlimited, dear)))
    call = _estimate(pricer, router, "chat")
    assert call.est_output_tokens == 2000  # dear's limit bounds unlimited's output too
    assert call.est_cost == _cost(100, 2000)


def test_a_model_with_only_a_context_window_is_held_at_that_window() -> None:
    prices = {"models": [_price("windowed", "1", max_input_tokens=32_768)]}
    pricer = CatalogPricer(catalog_from_section(prices))
    group = _group("chat", "windowed")
    router = Router({"chat": group}, health=HealthRegistry(), estimator=pricer)
    pricer.reach = router.reachable
    assert _estimate(pricer, router, "chat").est_output_tokens == 32_768
