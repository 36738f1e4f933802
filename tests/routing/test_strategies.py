from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterable
from decimal import Decimal

import pytest

from faregate.config import ConfigError, Deployment
from faregate.routing.ab_split import ABSplit, bucket
from faregate.routing.base import RouteRequest, StrategyContext
from faregate.routing.cheapest import Cheapest, within_max_price
from faregate.routing.errors import MaxPriceExceeded
from faregate.routing.health import HealthRegistry
from faregate.routing.lowest_latency import LowestLatency
from faregate.routing.priority import Priority
from faregate.routing.weighted import Weighted

from .fakes import FakeClock, TokenPrices, dep

# Cheap input / expensive output versus the opposite: the cheaper one depends on the prompt.
CROSSING = TokenPrices({"long-ctx": ("0.10", "10.00"), "short-ctx": ("3.00", "0.50")})


def ctx(
    seed: int = 7, health: HealthRegistry | None = None, estimator: TokenPrices = CROSSING
) -> StrategyContext:
    return StrategyContext(
        health or HealthRegistry(clock=FakeClock()), random.Random(seed), estimator
    )


def ids(deployments: Iterable[Deployment]) -> list[str]:
    return [d.id for d in deployments]


def test_cheapest_picks_by_the_cost_of_this_request_when_prices_cross() -> None:
    deployments = [dep("long-ctx"), dep("short-ctx")]
    short = RouteRequest(input_tokens=100, output_tokens=200)
    long = RouteRequest(input_tokens=100_000, output_tokens=200)
    # short: long-ctx 100*0.10/1M + 200*10/1M = 0.00201; short-ctx 0.0003 + 0.0001 = 0.0004
    assert CROSSING.estimate(deployments[0], short) == Decimal("0.00201")
    assert CROSSING.estimate(deployments[1], short) == Decimal("0.0004")
    assert ids(Cheapest({}).order(deployments, short, ctx())) == ["short-ctx", "long-ctx"]
    # long: long-ctx 0.01 + 0.002 = 0.012; short-ctx 0.3 + 0.0001 = 0.3001
    assert CROSSING.estimate(deployments[0], long) == Decimal("0.012")
    assert ids(Cheapest({}).order(deployments, long, ctx())) == ["long-ctx", "short-ctx"]


def test_cheapest_puts_unpriced_deployments_last() -> None:
    deployments = [dep("mystery"), dep("long-ctx"), dep("short-ctx")]
    order = Cheapest({}).order(deployments, RouteRequest(input_tokens=10), ctx())
    assert ids(order) == ["long-ctx", "short-ctx", "mystery"]


def test_max_price_refuses_deployments_above_it() -> None:
    deployments = [dep("long-ctx"), dep("short-ctx"), dep("mystery")]
    request = RouteRequest(input_tokens=100, output_tokens=200, max_price=Decimal("0.001"))
    assert ids(within_max_price(deployments, request, CROSSING)) == ["short-ctx"]


def test_max_price_below_every_deployment_is_a_400() -> None:
    request = RouteRequest(input_tokens=100, output_tokens=200, max_price=Decimal("0.0001"))
    with pytest.raises(MaxPriceExceeded) as caught:
        within_max_price([dep("long-ctx"), dep("short-ctx")], request, CROSSING)
    err = caught.value
    assert (err.status, err.code, err.param) == (400, "max_price_exceeded", "max_price")
    assert "0.0004" in err.message


def test_priority_orders_by_priority_then_config_order() -> None:
    deployments = [dep("c", priority=2), dep("a", priority=0), dep("b", priority=2)]
    assert ids(Priority({}).order(deployments, RouteRequest(), ctx())) == ["a", "c", "b"]


def test_weighted_first_choice_follows_the_weights() -> None:
    deployments = [dep("light", weight=1), dep("heavy", weight=3), dep("off", weight=0)]
    strategy, context = Weighted({}), ctx(seed=1)
    firsts = Counter(
        strategy.order(deployments, RouteRequest(), context)[0].id for _ in range(20_000)
    )
    assert firsts["heavy"] / 20_000 == pytest.approx(0.75, abs=0.02)
    assert firsts["light"] / 20_000 == pytest.approx(0.25, abs=0.02)
    assert firsts["off"] == 0
    assert sorted(ids(strategy.order(deployments, RouteRequest(), context))) == [
        "heavy",
        "light",
        "off",
    ]


def test_lowest_latency_prefers_the_fast_deployment() -> None:
    health = HealthRegistry(clock=FakeClock())
    for _ in range(3):
        health.observe("fast", latency=0.1)
        health.observe("slow", latency=1.0)
        health.observe("slowest", latency=2.0)
    deployments = [dep("slowest"), dep("slow"), dep("fast")]
    strategy, context = LowestLatency({}), ctx(seed=3, health=health)
    firsts = Counter(
        strategy.order(deployments, RouteRequest(), context)[0].id for _ in range(5000)
    )
    # Between the two best, the faster leads with probability 1.0 / (0.1 + 1.0).
    assert firsts["fast"] / 5000 == pytest.approx(1 / 1.1, abs=0.02)
    assert firsts["slowest"] == 0


def test_lowest_latency_shares_traffic_between_near_equal_deployments() -> None:
    health = HealthRegistry(clock=FakeClock())
    health.observe("a", latency=0.100)
    health.observe("b", latency=0.105)
    context = ctx(seed=5, health=health)
    firsts = Counter(
        LowestLatency({}).order([dep("a"), dep("b")], RouteRequest(), context)[0].id
        for _ in range(4000)
    )
    assert 0.4 < firsts["b"] / 4000 < 0.6


def test_lowest_latency_explores_unobserved_deployments_first() -> None:
    health = HealthRegistry(clock=FakeClock())
    health.observe("known", latency=0.01)
    order = LowestLatency({}).order([dep("known"), dep("new")], RouteRequest(), ctx(health=health))
    assert ids(order) == ["new", "known"]


def test_lowest_latency_uses_time_to_first_token_for_streams() -> None:
    health = HealthRegistry(clock=FakeClock())
    health.observe("quick-start", latency=5.0, ttft=0.1)
    health.observe("quick-finish", latency=1.0, ttft=2.0)
    deployments = [dep("quick-start"), dep("quick-finish")]
    strategy = LowestLatency({})
    stream = Counter(
        strategy.order(deployments, RouteRequest(stream=True), ctx(seed=s, health=health))[0].id
        for s in range(200)
    )
    batch = Counter(
        strategy.order(deployments, RouteRequest(), ctx(seed=s, health=health))[0].id
        for s in range(200)
    )
    assert stream.most_common(1)[0][0] == "quick-start"
    assert batch.most_common(1)[0][0] == "quick-finish"


SPLIT = {
    "experiment": "img-model-v2",
    "arms": [
        {"deployment": "control", "percent": 50},
        {"deployment": "candidate", "percent": 30, "name": "flux"},
        {"deployment": "outsider", "percent": 20},
    ],
}
ARMS = [dep("control"), dep("candidate"), dep("outsider")]


def test_ab_split_lands_ten_thousand_keys_within_two_points_of_target() -> None:
    strategy, context = ABSplit(SPLIT), ctx()
    firsts = Counter(
        strategy.order(ARMS, RouteRequest(key_id=f"key-{i}"), context)[0].id for i in range(10_000)
    )
    assert firsts["control"] / 100 == pytest.approx(50, abs=2)
    assert firsts["candidate"] / 100 == pytest.approx(30, abs=2)
    assert firsts["outsider"] / 100 == pytest.approx(20, abs=2)


def test_ab_split_assignment_is_sticky_per_key() -> None:
    strategy = ABSplit(SPLIT)
    for i in range(200):
        request = RouteRequest(key_id=f"key-{i}")
        arms = {strategy.order(ARMS, request, ctx(seed=s))[0].id for s in range(5)}
        assert len(arms) == 1
    assert bucket("img-model-v2", "key-1") == bucket("img-model-v2", "key-1")
    assert bucket("img-model-v2", "key-1") != bucket("other-experiment", "key-1")


def test_ab_split_can_stick_to_the_user_or_draw_per_request() -> None:
    by_user = ABSplit({**SPLIT, "sticky": "user"})
    same_user = {
        by_user.order(ARMS, RouteRequest(user="ana", key_id=f"k{i}"), ctx(seed=i))[0].id
        for i in range(50)
    }
    assert len(same_user) == 1
    unsticky = ABSplit({**SPLIT, "sticky": "none"})
    drawn = Counter(
        unsticky.order(ARMS, RouteRequest(key_id="k"), ctx(seed=i))[0].id for i in range(3000)
    )
    assert drawn["control"] / 3000 == pytest.approx(0.5, abs=0.04)


def test_ab_split_orders_the_other_arms_as_failover() -> None:
    request = RouteRequest(key_id="key-1")
    order = ABSplit(SPLIT).order(ARMS, request, ctx())
    assert sorted(ids(order)) == ["candidate", "control", "outsider"]
    arm = ABSplit(SPLIT).arm_of("candidate")
    assert arm is not None and arm.arm == "flux"


@pytest.mark.parametrize(
    "options",
    [
        {"arms": [{"deployment": "a", "percent": 100}]},
        {"experiment": "x", "arms": [{"deployment": "a", "percent": 60}]},
        {"experiment": "x", "arms": [{"deployment": "a", "percent": 100}], "sticky": "ip"},
        {"experiment": "x", "arms": []},
    ],
)
def test_ab_split_rejects_bad_options_at_startup(options: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        ABSplit(options)
