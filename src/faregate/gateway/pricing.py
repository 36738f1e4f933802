"""Provider cost and customer price of a call, from the price catalog: worst-case estimates
before the upstream call (over every deployment the call may reach, at its input and output
bounds and service tier), exact amounts after. A model the catalog does not know costs
nothing here but is marked, never silently mixed with priced usage."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from faregate.config import Deployment, ModelGroup
from faregate.errors import FaregateError, InvalidRequest
from faregate.gateway.call import Call
from faregate.pricing import (
    ModelPrice,
    PriceCatalog,
    cost_parts,
    estimate_images_cost,
    estimate_seconds_cost,
    estimate_tokens_cost,
)
from faregate.routing.base import RouteRequest
from faregate.tokens import chat_input_tokens, embedding_input_tokens

log = logging.getLogger("faregate.pricing")

# Output tokens per choice when neither the client nor the adapter caps the output and no
# output limit or context window of any deployment the call may reach is known (deployment
# `max_output_tokens`, catalog `max_output_tokens` / `max_input_tokens`). The only guess in
# the worst case: declare a limit to remove it.
DEFAULT_MAX_OUTPUT = 4096
_EARLIEST = datetime.min.replace(tzinfo=UTC)
_LATEST = datetime.max.replace(tzinfo=UTC)
# call.scratch key: the deployments estimate_call found the call may reach.
REACHABLE = "reachable"
ROUTE = "route_request"  # the call's RouteRequest, made once by estimate_call
ASKS_CACHE = "prompt_cache_lifetime"  # what the body marks for the prompt cache, and how long
HOUR = "1h"
# Deployments a request may reach: Router.reachable(group, request).
Reach = Callable[[ModelGroup, RouteRequest], Sequence[Deployment]]


def _size(body: dict[str, Any]) -> str:
    size = body.get("size")
    return size if isinstance(size, str) and "x" in size else "1024x1024"


def _positive_int(value: Any) -> int | None:
    # Absent and a plain int are nearly every request's case: answered before the checks.
    if value is None:
        return None
    if type(value) is int:
        return value if value > 0 else None
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        number = int(value)
    except ValueError:
        return None
    return number if number > 0 else None


def client_output_cap(body: dict[str, Any]) -> int | None:
    """The client's `max_completion_tokens` (else `max_tokens`) per choice, if any."""
    cap = _positive_int(body.get("max_completion_tokens"))
    return cap if cap is not None else _positive_int(body.get("max_tokens"))


def choices_of(body: dict[str, Any]) -> int:
    return _positive_int(body.get("n")) or 1


def output_limit(deployment: Deployment, price: ModelPrice | None) -> int | None:
    """The model's output limit: the deployment's `max_output_tokens`, else the catalog's."""
    return deployment.max_output_tokens or (price.max_output_tokens if price else None)


def output_bound(
    client_cap: int | None,
    choices: int,
    deployment: Deployment,
    price: ModelPrice | None,
    adapter_cap: int | None = None,
    unknown_limit: int | None = None,
) -> int:
    """The most output tokens (all `choices`) a provider may bill for a chat request on
    `deployment`: the client's cap (`client_output_cap`, else `adapter_cap`, what the
    provider adapter asks for when the client sets none), never above the model's limit
    (`output_limit`); without a cap the limit; without either `unknown_limit` (the caller's
    bound for a model whose limit is unknown), else DEFAULT_MAX_OUTPUT."""
    cap = client_cap or adapter_cap
    limit = output_limit(deployment, price)
    if cap is not None and limit is not None:
        per_choice = min(cap, limit)
    else:
        per_choice = cap or limit or unknown_limit or DEFAULT_MAX_OUTPUT
    return per_choice * choices


def _unknown_limit(limits: list[tuple[int | None, int | None]]) -> int | None:
    """Output per choice of a reachable model without a known limit: the largest output
    limit known in the group, or the largest context window (no model writes past its
    window), whichever is larger; None when neither is known."""
    known = [n for pair in limits for n in pair if n]
    return max(known) if known else None


def service_tier_of(body: dict[str, Any]) -> str | None:
    """The request's OpenAI `service_tier` in lower case ("fast" is OpenAI's other name for
    "priority"); None when not given."""
    tier = body.get("service_tier")
    if not isinstance(tier, str) or not tier.strip():
        return None
    name = tier.strip().lower()
    return "priority" if name == "fast" else name


def billed_tier(price: ModelPrice, deployment: Deployment, asked: str | None) -> str | None:
    """The service tier a call is priced at: the request's `service_tier`, else (absent or
    "auto") the deployment's configured `tier`. A tier the model's price does not declare
    is priced at the standard rate (None)."""
    tier = asked if asked not in (None, "auto") else deployment.tier
    if tier is None:
        return None
    name = tier.lower()
    return name if any(declared == name for declared, _ in price.tiers) else None


class CatalogPricer:
    """Implements the pipeline's Pricer and routing's CostEstimator."""

    def __init__(
        self, catalog: PriceCatalog, markup: Decimal = Decimal(1), reach: Reach | None = None
    ):
        self.catalog = catalog
        self.markup = markup
        # Set once the router exists (it needs this pricer first); without it the worst
        # case covers the requested group's own deployments only.
        self.reach = reach
        # provider name -> output tokens per choice its adapter asks for when the client
        # sets no cap (Anthropic's required max_tokens: `default_max_tokens`).
        self.adapter_caps: dict[str, int] = {}
        # model -> (catalog, price, in force from, until): the version in force is looked
        # up once per model and price change, not on every request.
        self._in_force: dict[str, tuple[PriceCatalog, ModelPrice | None, datetime, datetime]] = {}

    def price_for(self, model: str, at: datetime) -> ModelPrice | None:
        """`catalog.price_for(model, at=at)`, remembered while the same version is in force."""
        hit = self._in_force.get(model)
        if hit is not None and hit[0] is self.catalog and hit[2] <= at < hit[3]:
            return hit[1]
        price = self.catalog.price_for(model, at=at)
        starts = [p.effective_from for p in self.catalog.versions(model)]
        after = [s for s in starts if s > at]
        since = price.effective_from if price is not None else _EARLIEST
        self._in_force[model] = (self.catalog, price, since, after[0] if after else _LATEST)
        return price

    # -- routing's CostEstimator ---------------------------------------------------
    def estimate(self, deployment: Deployment, request: RouteRequest) -> Decimal | None:
        """None when the catalog cannot price this request on `deployment` (unknown model,
        or a price that does not cover it, such as a token-priced model asked for images):
        `cheapest` ranks it last and `max_price` leaves it out, the request goes on."""
        if request.now is None:
            return None
        price = self.price_for(deployment.catalog_model, request.now)
        if price is None:
            return None
        tier = billed_tier(price, deployment, request.priority)
        try:
            if request.kind == "images":
                return estimate_images_cost(
                    price,
                    request.images or 1,
                    request.image_size,
                    request.image_quality,
                    request.image_steps,
                    at=request.now,
                    tier=tier,
                )
            if request.kind == "transcriptions":
                return estimate_seconds_cost(price, request.seconds, at=request.now, tier=tier)
            return estimate_tokens_cost(
                price, request.input_tokens, request.output_tokens, at=request.now, tier=tier
            )
        except FaregateError:  # UnpricedUsage: this price does not cover this request
            return None

    # -- the pipeline's Pricer -----------------------------------------------------
    def estimate_call(self, call: Call) -> None:
        """Worst case of the call over every deployment it may reach (failover, fallbacks,
        tiered targets), from the input and output bounds: est_cost, est_price, input_bound
        and, for chat, est_output_tokens. est_input_tokens is the expected input (routing)."""
        body = call.body
        if call.kind == "chat":
            call.est_input_tokens, call.input_bound = chat_input_tokens(body)
        elif call.kind == "embeddings":
            call.est_input_tokens, call.input_bound = embedding_input_tokens(body.get("input"))
        worst, most_output = Decimal(0), 0
        route = self._route_request(call)
        asked = route.priority  # service_tier_of(body)
        reachable = call.scratch[REACHABLE] = self._reachable(call, route)
        prices = [self.price_for(d.catalog_model, call.created_at) for d in reachable]
        client_cap = route.max_output_tokens  # client_output_cap(body)
        choices = choices_of(body)
        unknown: int | None = None
        if call.kind == "chat" and client_cap is None:  # else never read
            unknown = _unknown_limit(
                [
                    (output_limit(d, p), p.max_input_tokens if p else None)
                    for d, p in zip(reachable, prices, strict=True)
                ]
            )
        for deployment, price in zip(reachable, prices, strict=True):
            output = 0
            if call.kind == "chat":
                cap = self.adapter_caps.get(deployment.provider)
                output = output_bound(client_cap, choices, deployment, price, cap, unknown)
            if output > most_output:
                most_output = output
            if price is None:
                continue
            try:
                cost = self._worst(call, price, output, billed_tier(price, deployment, asked))
            except FaregateError:
                continue
            if cost > worst:
                worst = cost
        if call.kind == "chat":
            call.est_output_tokens = most_output or (client_cap or DEFAULT_MAX_OUTPUT) * choices
        call.est_cost = worst
        call.est_price = worst * self.markup
        if call.kind == "chat":  # routing reads the expected output known only now
            route.output_tokens = _expected_output(call)
        call.scratch[ROUTE] = route

    def reachable(self, call: Call) -> Sequence[Deployment]:
        """Every deployment the call may reach (failover, fallbacks, tiered targets)."""
        return self._reachable(call, self.route_request(call))

    def _reachable(self, call: Call, route: RouteRequest) -> Sequence[Deployment]:
        if call.group is None:
            return ()
        if self.reach is None:
            return call.group.deployments
        return self.reach(call.group, route)

    def _worst(self, call: Call, price: ModelPrice, output: int, tier: str | None) -> Decimal:
        body = call.body
        if call.kind == "images":
            return estimate_images_cost(
                price,
                choices_of(body),
                _size(body),
                body.get("quality"),
                body.get("steps"),
                at=call.created_at,
                tier=tier,
                worst_case_time=True,
            )
        if call.kind == "transcriptions":  # the upload's duration bound (gateway/transcriptions)
            return estimate_seconds_cost(
                price, call.est_seconds, at=call.created_at, tier=tier, worst_case_time=True
            )
        # Cache writes only when the model charges more for them and the request marks
        # something for the cache; 1-hour ones only when a breakpoint asks for an hour.
        lifetime = prompt_cache_lifetime(call) if price.charges_cache_writes else ""
        return estimate_tokens_cost(
            price,
            call.input_bound,
            output,
            at=call.created_at,
            tier=tier,
            worst_case_time=True,
            cache_writes=bool(lifetime),
            hour_writes=lifetime == HOUR,
        )

    def settle(self, call: Call) -> None:
        if call.usage is None or call.deployment is None:
            return
        price = self.price_for(call.deployment.catalog_model, call.created_at)
        if price is None:
            log.warning(
                "unpriced model",
                extra={"model": call.deployment.catalog_model, "request_id": call.request_id},
            )
            return
        try:
            tier = billed_tier(price, call.deployment, service_tier_of(call.body))
            call.cost_parts = cost_parts(call.usage, price, at=call.created_at, tier=tier)
            call.cost = call.cost_parts.total
        except FaregateError as err:  # the answer was delivered: record it, flag the gap
            log.warning(
                "usage not priced", extra={"request_id": call.request_id, "reason": err.message}
            )
            return
        call.price = call.cost * self.markup

    def route_request(self, call: Call) -> RouteRequest:
        """What routing needs to know about this call: made once, by estimate_call."""
        route = call.scratch.get(ROUTE)
        return route if route is not None else self._route_request(call)

    def _route_request(self, call: Call) -> RouteRequest:
        body = call.body
        metadata = body.get("metadata") if isinstance(body.get("metadata"), dict) else {}
        return RouteRequest(
            kind=call.kind,
            input_tokens=call.est_input_tokens,
            output_tokens=_expected_output(call) if call.kind == "chat" else 0,
            max_output_tokens=client_output_cap(body),
            images=choices_of(body) if call.kind == "images" else 0,
            image_size=_size(body) if call.kind == "images" else None,
            image_quality=body.get("quality"),
            image_steps=body.get("steps"),
            seconds=call.est_seconds if call.kind == "transcriptions" else 0,
            request_id=call.request_id,
            key_id=call.principal.key_id,
            user=body.get("user") if isinstance(body.get("user"), str) else None,
            team=call.principal.team_name,
            tags=frozenset(call.tags),
            metadata=metadata or {},
            max_price=max_price_of(call),
            priority=service_tier_of(body),
            stream=call.stream,
            now=call.created_at,
        )


def prompt_cache_lifetime(call: Call) -> str:
    """How long the request asks the provider's prompt cache to hold what it marks (a
    `cache_control` on the request, a tool, a message or a part): "1h" when any breakpoint
    says so, "5m" for the others, "" when nothing is marked. Only a marked request may be
    charged cache writes, which cost more than input on Anthropic. Read once per call."""
    asked = call.scratch.get(ASKS_CACHE)
    if asked is None:
        asked = call.scratch[ASKS_CACHE] = _cache_lifetime(call.body)
    return asked  # type: ignore[no-any-return]


def _cache_lifetime(body: dict[str, Any]) -> str:
    marks = [body.get("cache_control")]
    marks += [t.get("cache_control") for t in body.get("tools") or () if isinstance(t, dict)]
    for message in body.get("messages") or ():
        if not isinstance(message, dict):
            continue
        marks.append(message.get("cache_control"))
        for key in ("content", "tool_calls"):
            items = message.get(key)
            if isinstance(items, list):
                marks += [i.get("cache_control") for i in items if isinstance(i, dict)]
    marks = [mark for mark in marks if mark is not None]
    if not marks:
        return ""
    return HOUR if any(isinstance(m, dict) and m.get("ttl") == HOUR for m in marks) else "5m"


def _expected_output(call: Call) -> int:
    """Output tokens routing expects of a chat call: its bound, at most 1,024 in total."""
    expected = call.est_output_tokens
    return expected if expected < 1024 else 1024


MAX_PRICE_HEADER = "x-faregate-max-price"


def max_price_of(call: Call) -> Decimal | None:
    """The lower of the key's `settings.max_price` and the request's x-faregate-max-price:
    the most this request may cost on the deployment that serves it (provider cost)."""
    ceiling = call.principal.max_price
    raw = call.request_headers.get(MAX_PRICE_HEADER)
    if raw is None:
        return ceiling
    try:
        asked = Decimal(raw.strip())
    except ArithmeticError:
        asked = Decimal(-1)
    if not asked.is_finite() or asked < 0:
        raise InvalidRequest(
            f"{MAX_PRICE_HEADER} must be a non-negative decimal amount.", param="max_price"
        )
    return asked if ceiling is None else min(asked, ceiling)
