"""Provider cost and customer price of a call, from the price catalog: worst-case estimates
before the upstream call, exact amounts after. A model the catalog does not know costs
nothing here but is marked, never silently mixed with priced usage."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from decimal import Decimal

from faregate.config import Deployment
from faregate.errors import FaregateError, InvalidRequest
from faregate.gateway.call import Call
from faregate.pricing import (
    ModelPrice,
    PriceCatalog,
    cost_of,
    estimate_images_cost,
    estimate_tokens_cost,
)
from faregate.routing.base import RouteRequest
from faregate.tokens import count_chat_input_tokens, count_embedding_input_tokens

log = logging.getLogger("faregate.pricing")

DEFAULT_MAX_OUTPUT = 4096
_EARLIEST = datetime.min.replace(tzinfo=UTC)
_LATEST = datetime.max.replace(tzinfo=UTC)


def _size(body: dict) -> str:
    size = body.get("size")
    return size if isinstance(size, str) and "x" in size else "1024x1024"


class CatalogPricer:
    """Implements the pipeline's Pricer and routing's CostEstimator."""

    def __init__(self, catalog: PriceCatalog, markup: Decimal = Decimal(1)):
        self.catalog = catalog
        self.markup = markup
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
    def estimate(self, deployment: Deployment, request: RouteRequest) -> Decimal | None:  # type: ignore[override]
        price = self.price_for(deployment.catalog_model, request.now) if request.now else None
        if price is None:
            return None
        if request.kind == "images":
            return estimate_images_cost(
                price,
                request.images or 1,
                request.image_size,
                request.image_quality,
                request.image_steps,
                at=request.now,
            )
        return estimate_tokens_cost(
            price, request.input_tokens, request.output_tokens, at=request.now
        )

    # -- the pipeline's Pricer -----------------------------------------------------
    def estimate_call(self, call: Call) -> None:
        body = call.body
        if call.kind == "chat":
            call.est_input_tokens = count_chat_input_tokens(body)
            cap = body.get("max_completion_tokens") or body.get("max_tokens")
            call.est_output_tokens = int(cap or DEFAULT_MAX_OUTPUT) * int(body.get("n") or 1)
        elif call.kind == "embeddings":
            call.est_input_tokens = count_embedding_input_tokens(body.get("input"))
        worst = Decimal(0)
        for deployment in call.group.deployments if call.group else ():
            price = self.price_for(deployment.catalog_model, call.created_at)
            if price is None:
                continue
            try:
                cost = self._worst(call, price)
            except FaregateError:
                continue
            worst = max(worst, cost)
        call.est_cost = worst
        call.est_price = worst * self.markup

    def _worst(self, call: Call, price: ModelPrice) -> Decimal:
        body = call.body
        if call.kind == "images":
            return estimate_images_cost(
                price,
                int(body.get("n") or 1),
                _size(body),
                body.get("quality"),
                body.get("steps"),
                at=call.created_at,
                worst_case_time=True,
            )
        cap = call.est_output_tokens
        if (
            price.max_output_tokens
            and call.kind == "chat"
            and not (body.get("max_completion_tokens") or body.get("max_tokens"))
        ):
            cap = min(cap, price.max_output_tokens)
        return estimate_tokens_cost(
            price, call.est_input_tokens, cap, at=call.created_at, worst_case_time=True
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
            call.cost = cost_of(call.usage, price, at=call.created_at)
        except FaregateError as err:  # the answer was delivered: record it, flag the gap
            log.warning(
                "usage not priced", extra={"request_id": call.request_id, "reason": err.message}
            )
            return
        call.price = call.cost * self.markup

    def route_request(self, call: Call) -> RouteRequest:
        body = call.body
        metadata = body.get("metadata") if isinstance(body.get("metadata"), dict) else {}
        return RouteRequest(
            kind=call.kind,
            input_tokens=call.est_input_tokens,
            output_tokens=min(call.est_output_tokens, 1024) if call.kind == "chat" else 0,
            max_output_tokens=body.get("max_completion_tokens") or body.get("max_tokens"),
            images=int(body.get("n") or 1) if call.kind == "images" else 0,
            image_size=_size(body) if call.kind == "images" else None,
            image_quality=body.get("quality"),
            image_steps=body.get("steps"),
            key_id=call.principal.key_id,
            user=body.get("user") if isinstance(body.get("user"), str) else None,
            team=call.principal.team_name,
            tags=frozenset(call.tags),
            metadata=metadata or {},
            max_price=max_price_of(call),
            stream=call.stream,
            now=call.created_at,
        )


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
