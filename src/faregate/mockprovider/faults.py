"""Which injected fault, if any, a request gets: one seeded draw per request and deployment.

Each deployment has its own RNG seeded from the config seed and its name, so a 30% error
rate yields close to 30% of requests, the same ones on every run with the same traffic.
"""

from __future__ import annotations

import enum
import random

from faregate.mockprovider.config import MockBehaviour


class Fault(enum.Enum):
    NONE = "none"
    SERVER_ERROR = "server_error"  # 500
    UNAVAILABLE = "unavailable"  # 503 (Anthropic: 529 overloaded)
    RATE_LIMIT = "rate_limit"  # 429 with Retry-After
    MALFORMED = "malformed"  # 200 with a truncated body
    BAD_REQUEST = "bad_request"  # 400, not worth retrying anywhere


class FaultDice:
    """Seeded per-deployment RNGs; `reset` makes the next draws repeat from the start."""

    def __init__(self, seed: int) -> None:
        self._seed = seed
        self._rngs: dict[str, random.Random] = {}

    def reset(self, seed: int | None = None) -> None:
        if seed is not None:
            self._seed = seed
        self._rngs.clear()

    def roll(self, deployment: str, behaviour: MockBehaviour) -> Fault:
        if behaviour.fault_free:
            return Fault.NONE
        rng = self._rngs.get(deployment)
        if rng is None:
            rng = self._rngs[deployment] = random.Random(f"{self._seed}:{deployment}")
        draw = rng.random()
        if draw < behaviour.error_rate:
            # The first half of the error band answers 500, the second half 503.
            return Fault.SERVER_ERROR if draw < behaviour.error_rate / 2 else Fault.UNAVAILABLE
        draw -= behaviour.error_rate
        if draw < behaviour.rate_limit_rate:
            return Fault.RATE_LIMIT
        draw -= behaviour.rate_limit_rate
        if draw < behaviour.malformed_rate:
            return Fault.MALFORMED
        draw -= behaviour.malformed_rate
        if draw < behaviour.bad_request_rate:
            return Fault.BAD_REQUEST
        return Fault.NONE
