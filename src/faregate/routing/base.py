"""The vocabulary routing shares with the gateway: the request facts a strategy may use,
the Strategy protocol and the context a strategy reads. Plain values, no I/O."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any, NamedTuple, Protocol

from faregate.config import Deployment


@dataclass(slots=True)
class RouteRequest:
    """What the gateway knows about one request before it is sent anywhere. Read-only once
    routing starts; not frozen because the pricer fills `output_tokens` in place once the
    output bound is known (a frozen copy cost as much as the rest of the estimate)."""

    kind: str = "chat"  # chat | embeddings | images | transcriptions
    input_tokens: int = 0  # estimated prompt tokens
    output_tokens: int = 0  # expected output tokens (used for the cost estimate)
    max_output_tokens: int | None = None  # the client's cap, if any
    images: int = 0  # n
    image_size: str | None = None  # "1024x1024"
    image_quality: str | None = None
    image_steps: int | None = None
    seconds: int = 0  # audio duration of a transcription (exact for WAV, else its bound)
    request_id: str | None = None  # draws an A/B arm when there is no sticky id
    key_id: str | None = None
    user: str | None = None
    team: str | None = None
    tags: frozenset[str] = frozenset()
    metadata: Mapping[str, Any] = field(default_factory=dict)
    max_price: Decimal | None = None  # the lower of the request's and the key's ceiling
    priority: str | None = None  # service tier asked for
    stream: bool = False
    now: datetime | None = None


class CostEstimator(Protocol):
    """Provider cost of this request on this deployment, or None when it is not priced."""

    def estimate(self, deployment: Deployment, request: RouteRequest) -> Decimal | None: ...


class LatencyStats(NamedTuple):
    """Exponentially weighted averages in seconds; None until something was observed. A
    NamedTuple: every answered request makes a new one."""

    latency: float | None = None
    ttft: float | None = None
    samples: int = 0


class HealthView(Protocol):
    """The part of the health registry routing reads (HealthRegistry implements it)."""

    def register(self, deployment_ids: Iterable[str]) -> None: ...

    def available(self, deployment_id: str) -> bool: ...

    def available_in(self, deployment_id: str) -> float: ...

    def latency(self, deployment_id: str) -> LatencyStats: ...


@dataclass(frozen=True, slots=True)
class StrategyContext:
    """Everything a strategy may consult besides the deployments and the request."""

    health: HealthView
    rng: random.Random
    estimator: CostEstimator | None = None
    # Orders another model group with that group's own strategy (used by `tiered`).
    order_group: Callable[[str, RouteRequest], list[Deployment]] | None = None


class Strategy(Protocol):
    """Orders a group's deployments for one request: the first is tried first.

    Built once per model group from its `strategy_options`; must raise ConfigError
    for bad options at construction, not per request.
    """

    def __init__(self, options: Mapping[str, Any]) -> None: ...

    def order(
        self, deployments: Sequence[Deployment], request: RouteRequest, ctx: StrategyContext
    ) -> list[Deployment]: ...
