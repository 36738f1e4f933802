"""In-memory A/B experiment statistics per arm, for a live report; the stored request
records stay the source of truth and can rebuild the same report shape.

`report(experiment_id)` returns (money as exact decimal strings, latency in ms):
    {"experiment": str,
     "arms": [{"arm": str, "requests": int, "errors": int, "error_rate": float,
               "cost": str, "price": str, "cost_per_request": str | None,
               "input_tokens": int, "output_tokens": int,
               "latency_p50_ms": float | None, "latency_p95_ms": float | None}, ...]}
Arms are sorted by name; latencies come from successful requests only.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any


@dataclass(slots=True)
class _Arm:
    requests: int = 0
    errors: int = 0
    cost: Decimal = Decimal(0)
    price: Decimal = Decimal(0)
    input_tokens: int = 0
    output_tokens: int = 0
    latencies: list[float] = field(default_factory=list)  # a uniform reservoir sample
    latencies_seen: int = 0


class ExperimentStats:
    """Counters and a bounded latency reservoir per (experiment, arm)."""

    def __init__(self, *, reservoir_size: int = 2048, rng: random.Random | None = None) -> None:
        self._size = reservoir_size
        self._rng = rng or random.Random()
        self._arms: dict[str, dict[str, _Arm]] = {}

    def record(
        self,
        experiment_id: str,
        arm: str,
        *,
        latency: float | None = None,
        error: bool = False,
        cost: Decimal = Decimal(0),
        price: Decimal = Decimal(0),
        input_tokens: int = 0,
        output_tokens: int = 0,
    ) -> None:
        stats = self._arms.setdefault(experiment_id, {}).setdefault(arm, _Arm())
        stats.requests += 1
        stats.errors += error
        stats.cost += cost
        stats.price += price
        stats.input_tokens += input_tokens
        stats.output_tokens += output_tokens
        if latency is not None and not error:
            self._sample(stats, latency)

    def experiments(self) -> list[str]:
        return sorted(self._arms)

    def report(self, experiment_id: str) -> dict[str, Any]:
        arms = self._arms.get(experiment_id, {})
        return {
            "experiment": experiment_id,
            "arms": [_arm_row(name, arms[name]) for name in sorted(arms)],
        }

    def _sample(self, stats: _Arm, latency: float) -> None:
        # Algorithm R: every latency seen so far is kept with equal probability.
        stats.latencies_seen += 1
        if len(stats.latencies) < self._size:
            stats.latencies.append(latency)
            return
        slot = self._rng.randrange(stats.latencies_seen)
        if slot < self._size:
            stats.latencies[slot] = latency


def _arm_row(name: str, s: _Arm) -> dict[str, Any]:
    ordered = sorted(s.latencies)
    return arm_report(
        name,
        requests=s.requests,
        errors=s.errors,
        cost=s.cost,
        price=s.price,
        input_tokens=s.input_tokens,
        output_tokens=s.output_tokens,
        p50_ms=_quantile_ms(ordered, 0.50),
        p95_ms=_quantile_ms(ordered, 0.95),
    )


def arm_report(
    name: str,
    *,
    requests: int,
    errors: int,
    cost: Decimal,
    price: Decimal,
    input_tokens: int,
    output_tokens: int,
    p50_ms: float | None,
    p95_ms: float | None,
) -> dict[str, Any]:
    """One arm's row of a report; also used to build reports from stored request records."""
    return {
        "arm": name,
        "requests": requests,
        "errors": errors,
        "error_rate": round(errors / requests, 6) if requests else 0.0,
        "cost": str(cost),
        "price": str(price),
        "cost_per_request": str(cost / requests) if requests else None,
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "latency_p50_ms": p50_ms,
        "latency_p95_ms": p95_ms,
    }


def interpolate(low: float, high: float, pos: float) -> float:
    """Linear interpolation between the two order statistics around position `pos`."""
    return low + (high - low) * (pos - int(pos))


def _quantile_ms(ordered: list[float], q: float) -> float | None:
    if not ordered:
        return None
    pos = q * (len(ordered) - 1)
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return round(interpolate(ordered[low], ordered[high], pos) * 1000, 3)
