"""`lowest_latency` strategy: ranks deployments by the EWMA latency (or time to first
token for streams) the health registry observed. Unobserved deployments are explored first;
the lead is chosen between the two fastest, favouring the faster, so traffic does not herd.

Options: `metric: latency | ttft | auto` (auto, the default: ttft for streams).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from faregate.config import ConfigError, Deployment
from faregate.routing.base import LatencyStats, RouteRequest, StrategyContext

_METRICS = ("auto", "latency", "ttft")


class LowestLatency:
    def __init__(self, options: Mapping[str, Any]) -> None:
        self.metric = str(options.get("metric", "auto"))
        if self.metric not in _METRICS:
            raise ConfigError(f"lowest_latency: metric must be one of {', '.join(_METRICS)}")

    def order(
        self, deployments: Sequence[Deployment], request: RouteRequest, ctx: StrategyContext
    ) -> list[Deployment]:
        use_ttft = self.metric == "ttft" or (self.metric == "auto" and request.stream)
        unseen: list[Deployment] = []
        seen: list[tuple[float, Deployment]] = []
        for d in deployments:
            value = _pick(ctx.health.latency(d.id), use_ttft)
            if value is None:
                unseen.append(d)
            else:
                seen.append((value, d))
        ctx.rng.shuffle(unseen)
        seen.sort(key=lambda pair: (pair[0], pair[1].priority))
        if len(seen) >= 2:
            a, b = seen[0][0], seen[1][0]
            # The lead is drawn between the two fastest, weighted by speed: near-equal
            # deployments share traffic, a much faster one takes nearly all of it.
            p_second = a / (a + b) if a + b > 0 else 0.5
            if ctx.rng.random() < p_second:
                seen[0], seen[1] = seen[1], seen[0]
        return unseen + [d for _, d in seen]


def _pick(stats: LatencyStats, use_ttft: bool) -> float | None:
    if use_ttft and stats.ttft is not None:
        return stats.ttft
    return stats.latency if stats.latency is not None else stats.ttft
