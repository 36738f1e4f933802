from __future__ import annotations

import random
from collections.abc import Iterable
from decimal import Decimal

import pytest

from faregate.config import ConfigError, Deployment, ModelGroup
from faregate.errors import FaregateError
from faregate.providers.base import ProviderError
from faregate.routing.base import RouteRequest
from faregate.routing.errors import ContextLengthExceeded, MaxPriceExceeded, NoHealthyDeployment
from faregate.routing.health import HealthRegistry
from faregate.routing.router import Router

from .fakes import FakeClock, TokenPrices, dep, group, groups

OUTAGE = ProviderError("down", status=503)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def health(clock: FakeClock) -> HealthRegistry:
    return HealthRegistry(clock=clock)


def ids(deployments: Iterable[Deployment]) -> list[str]:
    return [d.id for d in deployments]


def trip(health: HealthRegistry, deployment_id: str) -> None:
    for _ in range(5):
        health.observe(deployment_id, error=OUTAGE)


def test_resolve_finds_a_group_by_name_or_alias(health: HealthRegistry) -> None:
    router = Router(groups(group("gpt-4o", "a", aliases=("gpt-4o-latest",))), health=health)
    assert router.resolve("gpt-4o").name == "gpt-4o"
    assert router.resolve("gpt-4o-latest").name == "gpt-4o"


def test_resolve_of_an_unknown_model_is_a_404_on_the_model_param(health: HealthRegistry) -> None:
    router = Router(groups(group("gpt-4o", "a")), health=health)
    with pytest.raises(FaregateError) as caught:
        router.resolve("gpt-5")
    assert (caught.value.status, caught.value.code, caught.value.param) == (
        404,
        "model_not_found",
        "model",
    )


def test_plan_lists_the_group_then_its_fallback_groups(health: HealthRegistry) -> None:
    router = Router(
        groups(group("main", "m1", "m2", fallbacks=("backup",)), group("backup", "b1", "m1")),
        health=health,
    )
    assert ids(router.plan(router.resolve("main"), RouteRequest())) == ["m1", "m2", "b1"]


def test_plan_skips_open_breakers_and_cooling_deployments(
    health: HealthRegistry, clock: FakeClock
) -> None:
    router = Router(groups(group("main", "m1", "m2", "m3")), health=health)
    trip(health, "m1")
    health.observe("m2", error=ProviderError("slow down", status=429, retry_after=2))
    assert ids(router.plan(router.resolve("main"), RouteRequest())) == ["m3"]
    clock.advance(2)
    assert ids(router.plan(router.resolve("main"), RouteRequest())) == ["m2", "m3"]


def test_plan_refuses_with_503_when_nothing_is_available(
    health: HealthRegistry, clock: FakeClock
) -> None:
    router = Router(groups(group("main", "m1", "m2")), health=health)
    trip(health, "m1")
    clock.advance(10)
    health.observe("m2", error=ProviderError("slow down", status=429, retry_after=3.5))
    with pytest.raises(NoHealthyDeployment) as caught:
        router.plan(router.resolve("main"), RouteRequest())
    err = caught.value
    assert (err.status, err.code) == (503, "no_healthy_deployment")
    assert err.headers["Retry-After"] == "4"  # m2's cooldown ends first


def test_half_open_deployment_is_planned_so_recovery_is_probed(
    health: HealthRegistry, clock: FakeClock
) -> None:
    router = Router(groups(group("main", "m1")), health=health)
    trip(health, "m1")
    clock.advance(30)
    assert ids(router.plan(router.resolve("main"), RouteRequest())) == ["m1"]


def test_prompt_too_large_for_the_group_uses_its_context_window_fallbacks(
    health: HealthRegistry,
) -> None:
    small = ModelGroup(
        "small",
        (dep("s1", "small", max_input_tokens=8_000),),
        context_window_fallbacks=("large",),
        fallbacks=("other",),
    )
    router = Router(groups(small, group("large", "l1"), group("other", "o1")), health=health)
    assert ids(router.plan(small, RouteRequest(input_tokens=1_000))) == ["s1", "o1"]
    assert ids(router.plan(small, RouteRequest(input_tokens=20_000))) == ["l1", "o1"]
    assert ids(router.context_plan(small, RouteRequest(input_tokens=1_000))) == ["l1"]


def test_prompt_too_large_for_every_deployment_is_a_400(health: HealthRegistry) -> None:
    small = ModelGroup("small", (dep("s1", "small", max_input_tokens=8_000),))
    router = Router(groups(small), health=health)
    with pytest.raises(ContextLengthExceeded) as caught:
        router.plan(small, RouteRequest(input_tokens=9_000))
    assert (caught.value.status, caught.value.code) == (400, "context_length_exceeded")


def test_max_price_applies_to_the_whole_plan(health: HealthRegistry) -> None:
    prices = TokenPrices({"m1": ("10", "10"), "m2": ("1", "1"), "b1": ("0.5", "0.5")})
    router = Router(
        groups(group("main", "m1", "m2", fallbacks=("backup",)), group("backup", "b1")),
        health=health,
        estimator=prices,
    )
    request = RouteRequest(input_tokens=1000, max_price=Decimal("0.001"))
    assert ids(router.plan(router.resolve("main"), request)) == ["m2", "b1"]
    with pytest.raises(MaxPriceExceeded):
        router.plan(router.resolve("main"), RouteRequest(input_tokens=1000, max_price=Decimal("0")))


def test_cheapest_group_plans_by_price(health: HealthRegistry) -> None:
    prices = TokenPrices({"pricey": ("5", "15"), "thrifty": ("0.15", "0.60")})
    router = Router(
        groups(group("chat", "pricey", "thrifty", strategy="cheapest")),
        health=health,
        estimator=prices,
    )
    assert ids(router.plan(router.resolve("chat"), RouteRequest(input_tokens=500))) == [
        "thrifty",
        "pricey",
    ]


def tiered_groups() -> dict[str, ModelGroup]:
    rules = {
        "rules": [
            {"match": {"tags": ["draft", "concept"]}, "group": "cheap-images"},
            {"match": {"metadata": {"stage": "final"}}, "group": "premium-images"},
            {"match": {"team": ["design"], "kind": "images"}, "group": "premium-images"},
        ],
        "default": "standard-images",
    }
    return groups(
        group("images", "unused", strategy="tiered", strategy_options=rules),
        group("cheap-images", "sdxl-turbo", fallbacks=("standard-images",)),
        group("standard-images", "dall-e-3"),
        group("premium-images", "imagen-4", "gpt-image-1"),
    )


@pytest.mark.parametrize(
    ("request_", "expected"),
    [
        (RouteRequest(kind="images", tags=frozenset({"draft"})), ["sdxl-turbo"]),
        (RouteRequest(kind="images", metadata={"stage": "final"}), ["imagen-4", "gpt-image-1"]),
        (RouteRequest(kind="images", team="design"), ["imagen-4", "gpt-image-1"]),
        (RouteRequest(kind="images", team="sales"), ["dall-e-3"]),
        (RouteRequest(kind="images", metadata={"stage": "sketch"}), ["dall-e-3"]),
    ],
)
def test_tiered_routes_drafts_cheap_and_finals_premium(
    health: HealthRegistry, request_: RouteRequest, expected: list[str]
) -> None:
    router = Router(tiered_groups(), health=health)
    assert ids(router.plan(router.resolve("images"), request_)) == expected


@pytest.mark.parametrize(
    ("request_", "expected"),
    [
        (RouteRequest(kind="images", tags=frozenset({"draft"})), ["sdxl-turbo"]),
        (RouteRequest(kind="images", metadata={"stage": "final"}), ["imagen-4", "gpt-image-1"]),
        (RouteRequest(kind="images", team="sales"), ["dall-e-3"]),
        (None, ["unused", "sdxl-turbo", "imagen-4", "gpt-image-1", "dall-e-3"]),
    ],
)
def test_reachable_follows_the_tiered_rule_the_request_matches(
    health: HealthRegistry, request_: RouteRequest | None, expected: list[str]
) -> None:
    router = Router(tiered_groups(), health=health)
    images = router.resolve("images")
    assert ids(router.reachable(images, request_)) == expected
    if request_ is not None:
        assert set(ids(router.plan(images, request_))) <= set(expected)


def test_reachable_covers_fallbacks_and_context_window_fallbacks(health: HealthRegistry) -> None:
    router = Router(
        groups(
            group("chat", "a", "b", fallbacks=("backup",), context_window_fallbacks=("long",)),
            group("backup", "c"),
            group("long", "d", fallbacks=("never",)),  # a fallback's fallbacks are not tried
            group("never", "e"),
        ),
        health=health,
    )
    chat = router.resolve("chat")
    assert ids(router.reachable(chat, RouteRequest())) == ["a", "b", "d", "c"]
    assert ids(router.reachable(chat)) == ["a", "b", "d", "c"]
    assert set(ids(router.plan(chat, RouteRequest()))) <= {"a", "b", "c", "d"}


def test_tiered_target_keeps_its_own_strategy(health: HealthRegistry) -> None:
    tiers = tiered_groups()
    tiers["premium-images"] = group(
        "premium-images", "imagen-4", "gpt-image-1", strategy="weighted"
    )
    router = Router(tiers, health=health, rng=random.Random(2))
    final = RouteRequest(kind="images", metadata={"stage": "final"})
    firsts = {router.plan(router.resolve("images"), final)[0].id for _ in range(100)}
    assert firsts == {"imagen-4", "gpt-image-1"}


def test_experiment_arm_is_read_from_the_deployment_that_served(health: HealthRegistry) -> None:
    split = {
        "experiment": "e1",
        "arms": [{"deployment": "a", "percent": 50}, {"deployment": "b", "percent": 50}],
    }
    router = Router(
        groups(
            group("chat", "a", "b", strategy="ab_split", strategy_options=split),
            group("other", "c"),
        ),
        health=health,
    )
    served = router.plan(router.resolve("chat"), RouteRequest(key_id="k1"))[0]
    arm = router.experiment_arm(served)
    assert arm is not None and arm.experiment == "e1" and arm.deployment == served.id
    assert router.experiment_arm(router.resolve("other").deployments[0]) is None


def test_the_assigned_arm_stays_whatever_the_health_of_its_deployment(
    health: HealthRegistry,
) -> None:
    split = {
        "experiment": "e1",
        "sticky": "none",
        "arms": [{"deployment": "a", "percent": 50}, {"deployment": "b", "percent": 50}],
    }
    router = Router(
        groups(
            group("chat", "a", "b", strategy="ab_split", strategy_options=split),
            group("pick", "p", strategy="tiered", strategy_options={"default": "chat"}),
            group("other", "c"),
        ),
        health=health,
    )
    chat = router.resolve("chat")
    requests = [RouteRequest(request_id=f"req_{n}") for n in range(40)]
    assigned = [router.assigned_arm(chat, r) for r in requests]
    # Drawn from the request id: the plan puts the arm recorded for the request first.
    assert [router.plan(chat, r)[0].id for r in requests] == [a.deployment for a in assigned]
    assert {a.arm for a in assigned} == {"a", "b"}
    assert [router.assigned_arm(router.resolve("pick"), r) for r in requests] == assigned
    for _ in range(5):
        health.observe("a", error=OUTAGE)  # a's breaker opens: b serves a's requests
    on_a = next(r for r, a in zip(requests, assigned, strict=True) if a.arm == "a")
    assert [d.id for d in router.plan(chat, on_a)] == ["b"]
    assert router.assigned_arm(chat, on_a).arm == "a"
    assert router.assigned_arm(router.resolve("other"), on_a) is None


@pytest.mark.parametrize(
    "bad",
    [
        [group("a", "x", strategy="fastest")],
        [group("a", "x", fallbacks=("nope",))],
        [group("a", "x", strategy="cheapest")],  # no estimator
        [group("a", "x", aliases=("b",)), group("b", "y")],
        [
            group(
                "a",
                "x",
                strategy="ab_split",
                strategy_options={
                    "experiment": "e",
                    "arms": [{"deployment": "zz", "percent": 100}],
                },
            )
        ],
        [
            group("a", "x", strategy="tiered", strategy_options={"default": "b"}),
            group("b", "y", strategy="tiered", strategy_options={"default": "a"}),
        ],
    ],
)
def test_bad_routing_config_fails_at_startup(health: HealthRegistry, bad: list[ModelGroup]) -> None:
    with pytest.raises(ConfigError):
        Router(groups(*bad), health=health)
