"""Builders and fakes for routing tests: deployments, groups, a settable clock and a cost
estimator that does the real per-token arithmetic."""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from faregate.config import Deployment, ModelGroup
from faregate.routing.base import RouteRequest

MILLION = Decimal(1_000_000)


class FakeClock:
    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds

    async def sleep(self, seconds: float) -> None:
        self.now += seconds


def dep(id: str, group: str = "g", **kw: Any) -> Deployment:
    return Deployment(id=id, group=group, provider="mock", model=id, **kw)


def group(name: str, *ids: str, strategy: str = "priority", **kw: Any) -> ModelGroup:
    deployments = tuple(dep(i, name, priority=n) for n, i in enumerate(ids))
    return ModelGroup(name=name, deployments=deployments, strategy=strategy, **kw)


def groups(*items: ModelGroup) -> dict[str, ModelGroup]:
    return {g.name: g for g in items}


class TokenPrices:
    """Price per million input and output tokens, per image, by deployment id."""

    def __init__(
        self, prices: Mapping[str, tuple[str, str]], image: Mapping[str, str] | None = None
    ) -> None:
        self.prices = {k: (Decimal(i), Decimal(o)) for k, (i, o) in prices.items()}
        self.image = {k: Decimal(v) for k, v in (image or {}).items()}

    def estimate(self, deployment: Deployment, request: RouteRequest) -> Decimal | None:
        if request.kind == "images":
            price = self.image.get(deployment.id)
            return None if price is None else price * request.images
        if deployment.id not in self.prices:
            return None
        per_in, per_out = self.prices[deployment.id]
        return (request.input_tokens * per_in + request.output_tokens * per_out) / MILLION
