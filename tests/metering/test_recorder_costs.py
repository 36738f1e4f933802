"""Every usage event the recorder builds carries the provider cost of its own quantity: per
token type, images and seconds, exact decimal strings from the parts settle computed, adding
up to the request's cost."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from faregate.auth.principal import Principal
from faregate.gateway.call import Call
from faregate.metering.recorder import build_events
from faregate.pricing import cost_of, cost_parts, load_catalog
from faregate.pricing.loader import build_catalog
from faregate.pricing.yamlio import load_yaml
from faregate.usage import Usage

NOW = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
D = Decimal
CATALOG = build_catalog(
    [
        (
            "t.yaml",
            load_yaml(
                """
models:
  - {model: m, effective_from: 2024-01-01, input: 1, cached_input: 0.1, output: 2,
     reasoning: 3, tiers: {priority: 1.5}}
  - {model: voice, effective_from: 2024-01-01, input: 0, output: 0, per_second: 0.0001}
""",
                name="t.yaml",
            ),
        )
    ]
)


def settled(usage: Usage, model: str, catalog: object = CATALOG, tier: str | None = None) -> Call:
    """A call as the gateway's settle leaves it: cost and its parts from the catalog."""
    call = Call("req_1", Principal("key_1", "fg_x"), "chat", model, {}, created_at=NOW)
    call.usage = usage
    price = catalog.require_price(model, at=NOW)  # type: ignore[attr-defined]
    call.cost_parts = cost_parts(usage, price, at=NOW, tier=tier)
    call.cost = call.cost_parts.total
    assert call.cost == cost_of(usage, price, at=NOW, tier=tier)
    return call


def costs(call: Call) -> dict[str, str]:
    return {
        e["transaction_id"].split(":", 1)[1]: e["properties"]["cost"]
        for e in build_events(call, "sub_1", "acme")
    }


def test_each_token_type_carries_its_own_cost_with_the_tier_multiplier() -> None:
    usage = Usage(
        input_tokens=1000, cached_input_tokens=400, output_tokens=500, reasoning_tokens=200
    )
    call = settled(usage, "m", tier="priority")
    # x 1.5: 600 x 1, 400 x 0.1, 300 x 2, 200 x 3 per 1e6
    assert costs(call) == {
        "requests": "0.00276",
        "tokens:input": "0.0009",
        "tokens:cached_input": "0.00006",
        "tokens:output": "0.0009",
        "tokens:reasoning": "0.0009",
    }
    parts = [D(v) for k, v in costs(call).items() if k != "requests"]
    assert sum(parts) == call.cost


def test_an_image_event_carries_the_images_cost() -> None:
    usage = Usage(images=2, image_width=1024, image_height=1792, image_quality="hd")
    assert costs(settled(usage, "dall-e-3", load_catalog())) == {
        "requests": "0.24",
        "images": "0.24",
    }  # 2 x $0.120 (hd, 1024x1792)


def test_a_seconds_event_carries_the_per_second_cost() -> None:
    call = settled(Usage(seconds=D("12.5")), "voice")
    assert costs(call) == {"requests": "0.00125", "seconds": "0.00125"}


def test_a_call_that_cost_nothing_says_zero_on_every_event() -> None:
    call = Call("req_2", Principal("key_1", "fg_x"), "chat", "m", {}, created_at=NOW)
    call.usage = Usage(input_tokens=10, output_tokens=5)  # e.g. a shared cache hit: cost 0
    call.cache_hit, call.billed_share = True, D("0.5")
    assert costs(call) == {"requests": "0", "tokens:input": "0", "tokens:output": "0"}
