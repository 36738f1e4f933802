"""The worst-case usage events of a plan-priced call, before its upstream call: the events
`metering.recorder.build_events` will make after it, built by that same function from a
worst-case Usage on each deployment the call can reach, grouped into alternatives for
`billing.request_fee.worst_request_fee`. Builds events only; it prices nothing."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from faregate.billing.events import Event
from faregate.billing.metrics import BillableMetric
from faregate.billing.plans import Plan
from faregate.billing.request_fee import events_of_rows
from faregate.config import Deployment
from faregate.gateway import transcriptions
from faregate.gateway.call import Call
from faregate.gateway.pricing import choices_of
from faregate.metering.recorder import build_events
from faregate.pricing.cost import CostParts
from faregate.providers.openai import DEFAULT_IMAGE_QUALITY, parse_size
from faregate.usage import Usage

# The usage of a call on a deployment -> its provider cost per component (None: unpriced).
PartsOf = Callable[[Deployment | None, Usage], CostParts | None]

# Event suffixes whose quantities are one quantity billed as either type: the request's
# input tokens are uncached or cached, its output visible or reasoning, in any split.
_ALTERNATIVES = {
    "tokens:input": "tokens:input",
    "tokens:cached_input": "tokens:input",
    "tokens:output": "tokens:output",
    "tokens:reasoning": "tokens:output",
}
_DEPLOYMENT_KEYS = frozenset({"provider", "provider_model"})
_COST_FIELDS = frozenset({"cost", "price"})
_TEMPLATED = frozenset({"sum_agg", "count_agg"})


@dataclass(frozen=True, slots=True)
class PlanShape:
    """What of a call a plan's charges can tell apart, worked out once per plan: whether the
    deployment that serves a call can change its price (a filter on `provider` or
    `provider_model`, a metric over `cost`), and whether the token type can."""

    per_deployment: bool
    per_token_type: bool
    # Whether only a quantity and the filtered properties matter (metrics summing tokens or
    # images, or counting events): then the buckets a kind of request falls into are found
    # once (`worst_buckets`) and only its quantities are priced per request.
    templated: bool = False

    @classmethod
    def of(cls, plan: Plan, metrics: dict[str, BillableMetric] | Any) -> PlanShape:
        keys = {key for charge in plan.charges for f in charge.filters for key in f.values}
        used = [metrics.get(charge.billable_metric_code) for charge in plan.charges]
        fields = {getattr(m, "field_name", None) for m in used}
        by_cost = bool(fields & _COST_FIELDS)
        templated = not by_cost and all(
            m is not None and m.aggregation_type in _TEMPLATED for m in used
        )
        return cls(bool(keys & _DEPLOYMENT_KEYS) or by_cost, "type" in keys or by_cost, templated)


def worst_usages(call: Call, per_token_type: bool, unit: bool = False) -> tuple[Usage | None, ...]:
    """The most the call can use, once per way a plan can price it. Tokens: the input and
    output bounds (`call.input_bound`, `call.est_output_tokens`, set by the catalog's
    estimate), as input and output and, when the plan tells types apart, all of them as
    cached input and reasoning too. Images: n x size x quality x steps as the provider
    adapter will report them. Transcriptions: the upload's bound in seconds. Any other
    call: no usage (only its `requests` event). `unit`: one of each instead, to find
    the buckets they fall into."""
    if call.kind in ("chat", "embeddings"):
        n, m = (1, 1) if unit else (call.input_bound, call.est_output_tokens)
        plain = Usage(input_tokens=n, output_tokens=m)
        if not per_token_type:
            return (plain,)
        return (plain, Usage(n, m, cached_input_tokens=n, reasoning_tokens=m))
    if call.kind == "images":
        body = call.body
        width, height = parse_size(body.get("size"))
        steps = body.get("steps")
        return (
            Usage(
                images=1 if unit else choices_of(body),
                image_width=width,
                image_height=height,
                image_quality=str(body.get("quality") or DEFAULT_IMAGE_QUALITY),
                image_steps=steps
                if isinstance(steps, int) and not isinstance(steps, bool)
                else None,
            ),
        )
    if call.kind == transcriptions.KIND:
        return (transcriptions.worst_usage(call, unit),)
    return (None,)


def representatives(
    deployments: Sequence[Deployment], per_deployment: bool
) -> tuple[Deployment | None, ...]:
    """One deployment per distinct way of pricing: all of them (less duplicates) when the
    plan tells deployments apart, else any one."""
    if not deployments:
        return (None,)
    if not per_deployment:
        return (deployments[0],)
    seen: dict[tuple[str, str, str], Deployment] = {}
    for d in deployments:
        seen.setdefault((d.provider, d.model, d.catalog_model), d)
    return tuple(seen.values())


def worst_event_groups(
    call: Call,
    deployment: Deployment | None,
    usages: Iterable[Usage | None],
    parts_of: PartsOf | None,
    subscription: str,
    codes: frozenset[str],
) -> dict[str, list[Event]]:
    """The events the call would record on `deployment` with each of `usages`, grouped into
    alternatives (see `_ALTERNATIVES`); each usage is one more alternative of every group."""
    saved = (call.deployment, call.usage, call.cost, call.cost_parts, call.price)
    saved_share = (call.billed_share, call.cache_hit)
    groups: dict[str, list[Event]] = {}
    try:
        call.billed_share, call.cache_hit = Decimal(1), False
        for usage in usages:
            parts = parts_of(deployment, usage) if usage is not None and parts_of else None
            call.deployment, call.usage, call.cost_parts = deployment, usage, parts
            call.cost = parts.total if parts is not None else Decimal(0)
            call.price = call.est_price or Decimal(0)
            rows = build_events(call, subscription, call.principal.external_customer_id)
            for event in events_of_rows(rows):
                if event.code in codes:
                    suffix = event.transaction_id.removeprefix(f"{call.request_id}:")
                    groups.setdefault(_ALTERNATIVES.get(suffix, suffix), []).append(event)
    finally:
        call.deployment, call.usage, call.cost, call.cost_parts, call.price = saved
        call.billed_share, call.cache_hit = saved_share
    return groups


def group_quantity(call: Call, group: str) -> int | None:
    """The worst-case quantity of a group of alternatives (see `_ALTERNATIVES`); None: the
    event's own (a `requests` event counts 1)."""
    if group == "tokens:input":
        return call.input_bound
    if group == "tokens:output":
        return call.est_output_tokens
    if group == "images":
        return choices_of(call.body)
    if group == "seconds":
        return call.est_seconds
    return None


def template_key(call: Call, deployment: Deployment | None) -> tuple[Any, ...]:
    """What, besides the quantities, decides the buckets of a call's worst-case events."""
    body = call.body
    principal = call.principal
    return (
        call.kind,
        call.group.name if call.group else call.model,
        None if deployment is None else (deployment.provider, deployment.model),
        principal.team_name,
        principal.key_id,
        call.tags,
        (body.get("size"), body.get("quality"), body.get("steps"))
        if call.kind == "images"
        else None,
    )
