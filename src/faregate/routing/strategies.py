"""The strategy registry: a model group's `strategy:` names one of these classes.
A new strategy is one module plus one line here."""

from __future__ import annotations

from faregate.routing.ab_split import ABSplit
from faregate.routing.base import Strategy
from faregate.routing.cheapest import Cheapest
from faregate.routing.lowest_latency import LowestLatency
from faregate.routing.priority import Priority
from faregate.routing.tiered import Tiered
from faregate.routing.weighted import Weighted

STRATEGIES: dict[str, type[Strategy]] = {
    "priority": Priority,
    "weighted": Weighted,
    "cheapest": Cheapest,
    "lowest_latency": LowestLatency,
    "tiered": Tiered,
    "ab_split": ABSplit,
}
