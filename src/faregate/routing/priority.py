"""`priority` strategy: lowest `priority` value first, config order breaking ties.
The default strategy; takes no options."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from faregate.config import Deployment
from faregate.routing.base import RouteRequest, StrategyContext


class Priority:
    def __init__(self, options: Mapping[str, Any]) -> None:
        del options

    def order(
        self, deployments: Sequence[Deployment], request: RouteRequest, ctx: StrategyContext
    ) -> list[Deployment]:
        return sorted(deployments, key=lambda d: d.priority)  # sorted() is stable
