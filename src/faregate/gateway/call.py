"""The state of one gateway call as it moves through the pipeline stages."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from faregate.auth.principal import Principal
from faregate.config import Deployment, ModelGroup
from faregate.pricing.cost import CostParts
from faregate.usage import Usage


@dataclass(slots=True)
class Call:
    request_id: str
    principal: Principal
    kind: str  # chat | embeddings | images | moderations | transcriptions
    model: str  # as asked for
    body: dict[str, Any]
    stream: bool = False
    tags: tuple[str, ...] = ()
    request_headers: dict[str, str] = field(default_factory=dict)
    group: ModelGroup | None = None
    deployment: Deployment | None = None
    started: float = field(default_factory=time.perf_counter)
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    # Estimates made before the upstream call: the expected input (routing, rate limits),
    # the most input and output tokens a provider may bill (the holds' counts).
    est_input_tokens: int = 0
    input_bound: int = 0
    est_output_tokens: int = 0
    est_seconds: int = 0  # audio: the most seconds the upload can last (gateway/transcriptions)
    est_cost: Decimal | None = None
    est_price: Decimal | None = None
    # What happened.
    usage: Usage | None = None
    cost: Decimal = Decimal(0)
    cost_parts: CostParts | None = None  # `cost` per component (the usage events' cost)
    price: Decimal = Decimal(0)
    saved: Decimal = Decimal(0)
    cache_hit: bool = False
    # The part of `usage` billed as usage events: 1 for a fresh answer; for a cache hit
    # 0 (hit_billing: free, no events) or the configured share (events scaled by it).
    billed_share: Decimal = Decimal(1)
    attempts: int = 0
    status: int = 200
    error_code: str | None = None
    ttft: float | None = None
    finished: float | None = None
    experiment: str | None = None
    arm: str | None = None
    response_headers: dict[str, str] = field(default_factory=dict)
    # A chat stream's StreamState while it runs (the API reads `more` to batch writes).
    stream_state: Any = None
    # Stage-private state (hold ids, permits, …) keyed by stage name.
    scratch: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status < 400

    @property
    def latency_ms(self) -> Decimal:
        end = self.finished if self.finished is not None else time.perf_counter()
        # Whole microseconds, scaled to milliseconds: exactly three decimals, no quantize.
        return Decimal(round((end - self.started) * 1_000_000)).scaleb(-3)

    def fail(self, status: int, code: str | None) -> None:
        self.status = status
        self.error_code = code
