"""One deployment's circuit breaker and cooldown: a pure state machine driven by outcomes
and an explicit `now` (seconds on any monotonic clock). No clocks, replicas or providers."""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"
# Half-open sub-states of the single probe slot.
PROBE_FREE, PROBE_IN_FLIGHT, PROBE_BLOCKED = "free", "in_flight", "blocked"


@dataclass(frozen=True, slots=True)
class BreakerPolicy:
    """When a breaker opens and for how long. Defaults follow common gateway practice."""

    failure_threshold: int = 5  # consecutive failures
    window_seconds: float = 30.0
    min_requests: int = 10  # in the window before the ratio counts
    error_ratio: float = 0.5
    cooldown_seconds: float = 30.0  # open time before one probe is let through
    probe_timeout: float = 30.0  # a probe that never reports frees its slot after this


class RollingWindow:
    """Requests and failures over the last `seconds`, in one-second buckets."""

    __slots__ = ("_buckets", "_span", "failures", "requests")

    def __init__(self, seconds: float) -> None:
        self._span = max(1, math.ceil(seconds))
        self._buckets: deque[list[int]] = deque()  # [second, requests, failures]
        self.requests = 0
        self.failures = 0

    def add(self, now: float, failed: bool) -> None:
        second = math.floor(now)
        self._expire(second)
        if not self._buckets or self._buckets[-1][0] != second:
            self._buckets.append([second, 0, 0])
        bucket = self._buckets[-1]
        bucket[1] += 1
        self.requests += 1
        if failed:
            bucket[2] += 1
            self.failures += 1

    def counts(self, now: float) -> tuple[int, int]:
        self._expire(math.floor(now))
        return self.requests, self.failures

    def clear(self) -> None:
        self._buckets.clear()
        self.requests = self.failures = 0

    def _expire(self, second: int) -> None:
        while self._buckets and self._buckets[0][0] <= second - self._span:
            _, requests, failures = self._buckets.popleft()
            self.requests -= requests
            self.failures -= failures


class Breaker:
    """closed -> open (threshold or ratio) -> half_open after cooldown -> one probe ->
    closed on success, open again on failure. A cooldown (Retry-After) blocks traffic on
    its own without touching the breaker. `epoch` counts local changes."""

    __slots__ = (
        "consecutive",
        "cooldown_until",
        "epoch",
        "lease_needed",
        "open_until",
        "policy",
        "probe",
        "probe_until",
        "state",
        "window",
    )

    def __init__(self, policy: BreakerPolicy, *, lease_needed: bool = False) -> None:
        self.policy = policy
        # With shared state a half-open probe waits for a lease, so one replica probes.
        self.lease_needed = lease_needed
        self.state = CLOSED
        self.consecutive = 0
        self.window = RollingWindow(policy.window_seconds)
        self.open_until = 0.0
        self.cooldown_until = 0.0
        self.probe = PROBE_FREE
        self.probe_until = 0.0
        self.epoch = 0

    def current(self, now: float) -> str:
        """The state at `now`; an expired open breaker turns half-open here."""
        if self.state == OPEN and now >= self.open_until:
            self.state = HALF_OPEN
            if self.lease_needed:
                self._block(now)
            else:
                self.probe = PROBE_FREE
        if self.state == HALF_OPEN and self.probe != PROBE_FREE and now >= self.probe_until:
            self.probe = PROBE_FREE  # a lost probe or a silent peer must not block forever
        return self.state

    def available_in(self, now: float) -> float:
        """Seconds until traffic may be sent (0 when now)."""
        state = self.current(now)
        until = self.cooldown_until
        if state == OPEN and self.open_until > until:
            until = self.open_until
        elif state == HALF_OPEN and self.probe != PROBE_FREE and self.probe_until > until:
            until = self.probe_until
        return until - now if until > now else 0.0

    def try_acquire(self, now: float) -> bool:
        if self.available_in(now) > 0:
            return False
        if self.state == HALF_OPEN:
            self.probe = PROBE_IN_FLIGHT
            self.probe_until = now + self.policy.probe_timeout
        return True

    def succeed(self, now: float) -> None:
        state = self.current(now)
        if state == HALF_OPEN:
            self.close()
        elif state == CLOSED:
            self.consecutive = 0
            self.window.add(now, failed=False)

    def fail(self, now: float) -> None:
        state = self.current(now)
        if state == HALF_OPEN:
            self.open(now, self.policy.cooldown_seconds)
        elif state == CLOSED:
            self.consecutive += 1
            self.window.add(now, failed=True)
            if self._tripped(now):
                self.open(now, self.policy.cooldown_seconds)

    def release(self, now: float) -> None:
        """Free the probe slot without a verdict (the probe was cancelled or non-retryable)."""
        if self.current(now) == HALF_OPEN and self.probe == PROBE_IN_FLIGHT:
            self.probe = PROBE_FREE

    def cool(self, now: float, seconds: float) -> None:
        if now + seconds > self.cooldown_until:
            self.cooldown_until = now + seconds
            self.epoch += 1

    def open(self, now: float, seconds: float) -> None:
        self.state = OPEN
        self.open_until = now + seconds
        self.probe = PROBE_FREE
        self.consecutive = 0
        self.window.clear()
        self.epoch += 1

    def close(self) -> None:
        self.state = CLOSED
        self.probe = PROBE_FREE
        self.consecutive = 0
        self.window.clear()
        self.epoch += 1

    def adopt(
        self, now: float, state: str, open_for: float, cooldown_for: float, probe_mine: bool
    ) -> None:
        """Take on the state other replicas agreed on. Not a local change: epoch stays."""
        self.cooldown_until = max(self.cooldown_until, now + cooldown_for)
        before = self.current(now)
        if state == OPEN:
            if before != OPEN:
                self.consecutive = 0
                self.window.clear()
            self.state, self.open_until, self.probe = OPEN, now + open_for, PROBE_FREE
        elif state == HALF_OPEN:
            self.state = HALF_OPEN
            if probe_mine and self.probe == PROBE_BLOCKED:
                self.probe = PROBE_FREE
            elif not probe_mine and self.probe == PROBE_FREE:
                self._block(now)
        elif before != CLOSED:
            self.state, self.probe, self.consecutive = CLOSED, PROBE_FREE, 0
            self.window.clear()

    def _block(self, now: float) -> None:
        self.probe = PROBE_BLOCKED
        self.probe_until = now + self.policy.probe_timeout

    def _tripped(self, now: float) -> bool:
        if self.consecutive >= self.policy.failure_threshold:
            return True
        requests, failures = self.window.counts(now)
        return (
            requests >= self.policy.min_requests and failures >= self.policy.error_ratio * requests
        )
