"""Turns a finished gateway call into its request record and Lago-style usage events.

Built-in event codes (documented in docs/billing.md): `tokens` (one event per non-zero
type: input, cached_input, output, reasoning — disjoint, so they add up), `images`,
`seconds` and `requests`. Every event's transaction_id starts with the request id.
A cache hit is billed by the cache's hit policy (`call.billed_share`): free hits emit no
events; shared hits emit every quantity scaled by the share, flagged `cache_hit`. Every
call, a free hit included, leaves its request record (`cache_hit`, cost, price, `saved`).
Every event carries `cost`, the provider cost of its quantity (a decimal string, exact,
from the parts settle computed: `requests` carries the whole call's).
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

from faregate.gateway.call import Call
from faregate.metering.derived import Packed, expand, pack
from faregate.metering.writer import UsageWriter
from faregate.money import decimal_str, to_nanos
from faregate.pricing.cost import CostParts
from faregate.usage import Usage

SubscriptionOf = Callable[[Call], str | None]
_NO_COST = CostParts()


def _base_properties(call: Call) -> dict[str, Any]:
    deployment = call.deployment
    props: dict[str, Any] = {
        "model": call.group.name if call.group else call.model,
        "provider": deployment.provider if deployment else None,
        "provider_model": deployment.model if deployment else None,
        "team": call.principal.team_name,
        "key": call.principal.key_id,
        "tags": call.tags,
    }
    if call.cache_hit:
        props["cache_hit"] = True
        props["billed_share"] = decimal_str(call.billed_share)
        props["saved"] = decimal_str(call.saved)
    return props


def _scaled(quantity: int, share: Decimal) -> int | str:
    """A quantity billed in part: unchanged at share 1, else a decimal string."""
    return quantity if share == 1 else decimal_str(Decimal(quantity) * share)


def _token_parts(usage: Usage) -> list[tuple[str, int]]:
    parts = [
        ("input", usage.uncached_input_tokens),
        ("cached_input", usage.cached_input_tokens),
        ("output", usage.visible_output_tokens),
        ("reasoning", usage.reasoning_tokens),
    ]
    return [(kind, n) for kind, n in parts if n]


def event_parts(call: Call) -> Packed | None:
    """The events a call makes for its subscription's plan, packed (`metering.derived`):
    None for a free cache hit, which leaves nothing for a plan to bill."""
    usage = call.usage
    share = call.billed_share
    if share <= 0:
        return None
    parts: list[list[Any]] = [
        [
            "requests",
            "requests",
            {
                "requests": _scaled(1, share),
                "cost": decimal_str(call.cost),
                "price": decimal_str(call.price),
            },
        ]
    ]
    if usage is not None:
        costs = _cost_parts(call)
        for kind, n in _token_parts(usage):
            props = {"type": kind, "tokens": _scaled(n, share), "estimated": usage.estimated}
            if costs is not None:
                props["cost"] = decimal_str(getattr(costs, kind))
            parts.append(["tokens", f"tokens:{kind}", props])
        if usage.images:
            props = {
                "images": _scaled(usage.images, share),
                "size": usage.image_size,
                "quality": usage.image_quality,
                "steps": usage.image_steps,
            }
            if costs is not None:
                props["cost"] = decimal_str(costs.images)
            parts.append(["images", "images", props])
        if usage.seconds:
            props = {"seconds": decimal_str(usage.seconds * share)}
            if costs is not None:
                props["cost"] = decimal_str(costs.seconds)
            parts.append(["seconds", "seconds", props])
    return pack(_base_properties(call), parts)


def build_events(call: Call, subscription: str, customer: str | None) -> list[dict[str, Any]]:
    packed = event_parts(call)
    if packed is None:
        return []
    return expand(call.request_id, subscription, customer, call.created_at, packed)


def _cost_parts(call: Call) -> CostParts | None:
    """The provider cost per component: settle's parts, or nothing at all when the call cost
    nothing (a cache hit, an unpriced model: every part is 0, as `requests`' cost says). None
    only if a cost was set without its parts, so no event claims a part it cannot know."""
    if call.cost_parts is not None:
        return call.cost_parts
    return _NO_COST if call.cost == 0 else None


def build_request_row(call: Call, subscription: str | None) -> dict[str, Any]:
    usage = call.usage or Usage()
    deployment = call.deployment
    return {
        "id": call.request_id,
        "created_at": call.created_at,
        "kind": call.kind,
        "customer_id": call.principal.customer_id,
        "external_customer_id": call.principal.external_customer_id,
        "external_subscription_id": subscription,
        "team_id": call.principal.team_id,
        "key_id": call.principal.key_id,
        "tags": call.tags,
        "model_requested": call.model,
        "model_served": deployment.model if deployment else None,
        "deployment": deployment.id if deployment else None,
        "provider": deployment.provider if deployment else None,
        "status": call.status,
        "error_code": call.error_code,
        "stream": call.stream,
        "cache_hit": call.cache_hit,
        "attempts": call.attempts,
        "latency_ms": call.latency_ms,
        "ttft_ms": None if call.ttft is None else round(call.ttft * 1000, 3),
        "input_tokens": usage.input_tokens,
        "output_tokens": usage.output_tokens,
        "cached_input_tokens": usage.cached_input_tokens,
        "reasoning_tokens": usage.reasoning_tokens,
        "images": usage.images,
        "image_size": usage.image_size,
        "image_quality": usage.image_quality,
        "image_steps": usage.image_steps,
        "seconds": usage.seconds,
        "usage_estimated": usage.estimated,
        "cost_nanos": to_nanos(call.cost),
        "price_nanos": to_nanos(call.price),
        "saved_nanos": to_nanos(call.saved),
        "experiment": call.experiment,
        "arm": call.arm,
        "events": None,  # set by the writer where the record carries its events
    }


class Recorder:
    """The pipeline's Meter: one request record per call, events when a subscription pays."""

    def __init__(self, writer: UsageWriter, subscription_of: SubscriptionOf | None = None):
        self._writer = writer
        self._subscription_of = subscription_of or (lambda c: c.principal.external_subscription_id)

    def record(self, call: Call) -> None:
        """Events whenever the call has usage: a finished call, and one that ended after the
        upstream answered (a stream cut by the client or the upstream, estimated; a client
        gone before a non-streamed answer). Its record's price is what its wallet pays, so
        the events a plan bills from must count the same request."""
        subscription = self._subscription_of(call)
        row = build_request_row(call, subscription)
        packed = event_parts(call) if subscription and call.usage is not None else None
        self._writer.record(row, packed=packed)
