"""`cheapest` strategy: orders deployments by the estimated provider cost of this very
request (CostEstimator); unpriced deployments go last. Also the `max_price` guard."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

from faregate.config import ConfigError, Deployment
from faregate.routing.base import CostEstimator, RouteRequest, StrategyContext
from faregate.routing.errors import MaxPriceExceeded


class Cheapest:
    def __init__(self, options: Mapping[str, Any]) -> None:
        del options

    def order(
        self, deployments: Sequence[Deployment], request: RouteRequest, ctx: StrategyContext
    ) -> list[Deployment]:
        if ctx.estimator is None:
            raise ConfigError("the cheapest strategy needs a cost estimator")
        estimator = ctx.estimator
        costs = {d.id: estimator.estimate(d, request) for d in deployments}

        def key(d: Deployment) -> tuple[int, Decimal, int]:
            cost = costs[d.id]
            return (1, Decimal(0), d.priority) if cost is None else (0, cost, d.priority)

        return sorted(deployments, key=key)


def within_max_price(
    deployments: Sequence[Deployment], request: RouteRequest, estimator: CostEstimator | None
) -> list[Deployment]:
    """Drop deployments whose estimated cost exceeds `request.max_price`.

    A deployment that cannot be priced is dropped too: its cost cannot be shown to be
    under the ceiling. Raises MaxPriceExceeded when nothing is left.
    """
    ceiling = request.max_price
    if ceiling is None:
        return list(deployments)
    if estimator is None:
        raise MaxPriceExceeded("max_price was set but no deployment can be priced")
    kept = []
    cheapest: Decimal | None = None
    for d in deployments:
        cost = estimator.estimate(d, request)
        if cost is None:
            continue
        if cost <= ceiling:
            kept.append(d)
        cheapest = cost if cheapest is None else min(cheapest, cost)
    if not kept:
        detail = f"; the cheapest deployment costs {cheapest}" if cheapest is not None else ""
        raise MaxPriceExceeded(
            f"No deployment can serve this request within max_price {ceiling}{detail}"
        )
    return kept
