"""`weighted` strategy: the first deployment is drawn at random in proportion to `weight`,
the rest follow as a weighted draw without replacement (failover order). No options."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from faregate.config import Deployment
from faregate.routing.base import RouteRequest, StrategyContext


class Weighted:
    def __init__(self, options: Mapping[str, Any]) -> None:
        del options

    def order(
        self, deployments: Sequence[Deployment], request: RouteRequest, ctx: StrategyContext
    ) -> list[Deployment]:
        # Efraimidis-Spirakis: key u**(1/w), descending, is a weighted draw without
        # replacement in one pass. Weight 0 sorts after every positive weight.
        def key(d: Deployment) -> float:
            u = ctx.rng.random()
            return u ** (1.0 / d.weight) if d.weight > 0 else -1.0 - u

        return sorted(deployments, key=key, reverse=True)
