"""What replicas exchange to share breaker state: per-deployment reports going up, the
agreed view coming back, and the SharedHealth protocol a store implements
(health_redis.RedisSharedHealth). Plain values; no I/O here."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from faregate.routing.breaker import BreakerPolicy

PROBE_NONE, PROBE_SUCCEEDED, PROBE_FAILED, PROBE_RELEASED = 0, 1, 2, 3


@dataclass(slots=True)
class HealthReport:
    """What one replica saw of one deployment since its previous exchange."""

    deployment_id: str
    successes: int = 0
    failures: int = 0
    trailing_failures: int = 0  # failures after the last success in this batch
    opened_for: float = 0.0  # this replica's breaker opened for this many seconds
    cooldown_for: float = 0.0  # a Retry-After cooldown, seconds from now
    probe: int = PROBE_NONE  # outcome of this replica's half-open probe
    wants_probe: bool = False  # traffic is waiting on a half-open deployment

    def merge_older(self, older: HealthReport) -> None:
        """Fold in a report from before this one (used when an exchange failed)."""
        if self.successes == 0:
            self.trailing_failures += older.trailing_failures
        self.successes += older.successes
        self.failures += older.failures
        self.opened_for = self.opened_for or older.opened_for
        self.cooldown_for = max(self.cooldown_for, older.cooldown_for)
        self.probe = self.probe or older.probe
        self.wants_probe = self.wants_probe or older.wants_probe


@dataclass(frozen=True, slots=True)
class SharedView:
    """The state every replica agrees on, durations relative to the exchange."""

    state: str  # closed | open | half_open
    open_for: float = 0.0
    cooldown_for: float = 0.0
    probe_mine: bool = False  # this replica holds the half-open probe lease
    consecutive_failures: int = 0
    window_requests: int = 0
    window_failures: int = 0


class SharedHealth(Protocol):
    """A store that merges reports from every replica and returns the common view."""

    async def exchange(
        self, reports: Sequence[HealthReport], policy: BreakerPolicy
    ) -> dict[str, SharedView]: ...
