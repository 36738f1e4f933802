"""Per-deployment health: circuit breakers, Retry-After cooldowns and EWMA latency, read by
the router on every request and fed by failover. In-process; with a SharedHealth store it
also exchanges state with other replicas in the background, never on the request path."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from faregate.errors import FaregateError
from faregate.providers.base import ProviderError
from faregate.routing.base import LatencyStats
from faregate.routing.breaker import CLOSED, HALF_OPEN, OPEN, PROBE_BLOCKED, Breaker, BreakerPolicy
from faregate.routing.shared import (
    PROBE_FAILED,
    PROBE_RELEASED,
    PROBE_SUCCEEDED,
    HealthReport,
    SharedHealth,
    SharedView,
)

log = logging.getLogger(__name__)

SUCCESS, FAILURE, COOLDOWN, NEUTRAL = "success", "failure", "cooldown", "neutral"


@dataclass(frozen=True, slots=True)
class StateChange:
    deployment_id: str
    old: str
    new: str
    at: float  # wall-clock seconds
    local: bool = True  # False when adopted from other replicas through the shared store


def classify(error: BaseException | None) -> tuple[str, float]:
    """How an outcome counts: (verdict, cooldown seconds).

    A 429 with Retry-After only cools the deployment down for exactly that long; other
    retryable errors (5xx, timeouts, connection errors) are breaker failures (a 5xx that
    sent Retry-After also cools down); non-retryable ones (400, auth) say nothing of health.
    """
    if error is None:
        return SUCCESS, 0.0
    if isinstance(error, ProviderError):
        rate_limited = 429 in (error.status, error.upstream_status)
        if rate_limited and error.retry_after:
            return COOLDOWN, error.retry_after
        if error.retryable:
            return FAILURE, error.retry_after or 0.0
        return NEUTRAL, 0.0
    if isinstance(error, FaregateError):
        return NEUTRAL, 0.0
    if isinstance(error, TimeoutError | OSError):
        return FAILURE, 0.0
    return NEUTRAL, 0.0


@dataclass(slots=True)
class _Entry:
    breaker: Breaker
    report: HealthReport
    latency: LatencyStats = field(default_factory=LatencyStats)
    shared: SharedView | None = None


class HealthRegistry:
    """Breaker, cooldown and latency of every deployment; see BreakerPolicy for the rules."""

    def __init__(
        self,
        policy: BreakerPolicy | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        ewma_alpha: float = 0.3,
        shared: SharedHealth | None = None,
        sync_interval: float = 0.25,
    ) -> None:
        self.policy = policy or BreakerPolicy()
        self._clock = clock
        self._wall = wall
        self._alpha = ewma_alpha
        self._shared = shared
        self._sync_interval = sync_interval
        self._entries: dict[str, _Entry] = {}
        self._callbacks: list[Callable[[StateChange], None]] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False

    # -- reads (router, strategies) -------------------------------------------------

    def register(self, deployment_ids: Iterable[str]) -> None:
        for deployment_id in deployment_ids:
            self._entry(deployment_id)

    def available(self, deployment_id: str) -> bool:
        return self.available_in(deployment_id) == 0.0

    def available_in(self, deployment_id: str) -> float:
        """Seconds until this deployment may take traffic; 0.0 when it may now."""
        entry = self._entry(deployment_id)
        breaker, now = entry.breaker, self._clock()
        old = breaker.state
        wait = breaker.available_in(now)
        wants = breaker.state == HALF_OPEN and breaker.probe == PROBE_BLOCKED
        urgent = wants and not entry.report.wants_probe
        entry.report.wants_probe |= wants
        self._notice(deployment_id, old, breaker.state, urgent=urgent)
        return wait

    def state(self, deployment_id: str) -> str:
        breaker = self._entry(deployment_id).breaker
        old = breaker.state
        new = breaker.current(self._clock())
        self._notice(deployment_id, old, new)
        return new

    def latency(self, deployment_id: str) -> LatencyStats:
        entry = self._entries.get(deployment_id)
        return entry.latency if entry else LatencyStats()

    # -- writes (failover, gateway) -------------------------------------------------

    def try_acquire(self, deployment_id: str) -> bool:
        """Claim the right to send one request now; takes the probe slot when half-open."""
        entry = self._entry(deployment_id)
        old = entry.breaker.state
        ok = entry.breaker.try_acquire(self._clock())
        self._notice(deployment_id, old, entry.breaker.state)
        return ok

    def release(self, deployment_id: str) -> None:
        """Give back a probe slot taken by try_acquire when the call had no outcome."""
        entry = self._entry(deployment_id)
        if entry.breaker.state == HALF_OPEN and self._shared is not None:
            entry.report.probe = PROBE_RELEASED
        entry.breaker.release(self._clock())

    def observe(
        self,
        deployment_id: str,
        *,
        latency: float | None = None,
        ttft: float | None = None,
        error: BaseException | None = None,
    ) -> None:
        """Record one call's outcome: success when `error` is None (see `classify`)."""
        entry = self._entry(deployment_id)
        breaker, report, now = entry.breaker, entry.report, self._clock()
        old = breaker.state
        before = breaker.current(now)
        was_probe = before == HALF_OPEN
        verdict, cooldown = classify(error)
        if verdict == SUCCESS:
            breaker.succeed(now)
            report.successes += 1
            report.trailing_failures = 0
            self.observe_latency(deployment_id, latency=latency, ttft=ttft)
        elif verdict == FAILURE:
            breaker.fail(now)
            report.failures += 1
            report.trailing_failures += 1
            if before == CLOSED and breaker.state == OPEN:
                report.opened_for = self.policy.cooldown_seconds
        else:
            breaker.release(now)
        if cooldown:
            breaker.cool(now, cooldown)
            report.cooldown_for = max(report.cooldown_for, cooldown)
        if was_probe:
            report.probe = {SUCCESS: PROBE_SUCCEEDED, FAILURE: PROBE_FAILED}.get(
                verdict, PROBE_RELEASED
            )
        self._notice(deployment_id, old, breaker.state, urgent=bool(cooldown))

    def observe_latency(
        self, deployment_id: str, *, latency: float | None = None, ttft: float | None = None
    ) -> None:
        """Feed the latency averages only (e.g. a stream's total time after its first chunk)."""
        entry = self._entry(deployment_id)
        stats, a = entry.latency, self._alpha
        entry.latency = LatencyStats(
            latency=_ewma(stats.latency, latency, a),
            ttft=_ewma(stats.ttft, ttft, a),
            samples=stats.samples + (latency is not None or ttft is not None),
        )

    def on_change(self, callback: Callable[[StateChange], None]) -> None:
        """Call `callback` on every breaker transition (e.g. to alert on an outage)."""
        self._callbacks.append(callback)

    # -- admin ----------------------------------------------------------------------

    def snapshot(self) -> list[dict[str, Any]]:
        """One row per deployment for GET /api/v1/deployments/health."""
        now, wall = self._clock(), self._wall()
        return [
            self._row(dep_id, entry, now, wall) for dep_id, entry in sorted(self._entries.items())
        ]

    def _row(self, dep_id: str, entry: _Entry, now: float, wall: float) -> dict[str, Any]:
        b = entry.breaker
        state = self.state(dep_id)
        requests, failures = b.window.counts(now)

        def at(moment: float) -> float | None:
            return round(wall + moment - now, 3) if moment > now else None

        row: dict[str, Any] = {
            "deployment": dep_id,
            "state": state,
            "consecutive_failures": b.consecutive,
            "window_requests": requests,
            "error_ratio": round(failures / requests, 4) if requests else 0.0,
            "open_until": at(b.open_until) if state == OPEN else None,
            "cooldown_until": at(b.cooldown_until),
            "available_in_seconds": round(b.available_in(now), 3),
            "ewma_latency_ms": _ms(entry.latency.latency),
            "ewma_ttft_ms": _ms(entry.latency.ttft),
            "samples": entry.latency.samples,
        }
        if entry.shared is not None:
            row["shared"] = {
                "state": entry.shared.state,
                "consecutive_failures": entry.shared.consecutive_failures,
                "window_requests": entry.shared.window_requests,
                "window_failures": entry.shared.window_failures,
            }
        return row

    # -- sharing with other replicas -----------------------------------------------

    async def start(self) -> None:
        """Start the background exchange with the shared store (no-op without one)."""
        if self._shared is not None and self._task is None:
            self._task = asyncio.create_task(self._sync_loop(), name="health-sync")

    async def aclose(self) -> None:
        if self._task is not None:
            # The flag ends the loop even if a cancel coinciding with an expiring
            # asyncio.timeout is turned into a TimeoutError and swallowed (Python 3.11).
            self._closing = True
            self._wake.set()
            self._task.cancel()
            await asyncio.wait({self._task}, timeout=5)
            self._task = None

    async def sync(self) -> None:
        """Send what this replica saw since the last call; adopt the agreed state."""
        if self._shared is None:
            return
        reports: list[HealthReport] = []
        epochs: dict[str, int] = {}
        for dep_id, entry in self._entries.items():
            reports.append(entry.report)
            epochs[dep_id] = entry.breaker.epoch
            entry.report = HealthReport(dep_id)
        try:
            views = await self._shared.exchange(reports, self.policy)
        except BaseException:
            for report in reports:
                self._entries[report.deployment_id].report.merge_older(report)
            raise
        now = self._clock()
        for dep_id, view in views.items():
            entry = self._entries[dep_id]
            entry.shared = view
            if entry.breaker.epoch != epochs[dep_id]:
                continue  # changed here meanwhile; the next exchange carries it
            old = entry.breaker.state
            entry.breaker.adopt(now, view.state, view.open_for, view.cooldown_for, view.probe_mine)
            self._notice(dep_id, old, entry.breaker.state, local=False)

    async def _sync_loop(self) -> None:
        failing = False
        while not self._closing:
            try:
                async with asyncio.timeout(max(1.0, self._sync_interval * 4)):
                    await self.sync()
                failing = False
            except Exception:  # the shared store is down: keep routing on local state
                if not failing:
                    log.warning("shared health exchange failed; using local state", exc_info=True)
                failing = True
            await asyncio.sleep(self._sync_interval / 5)  # bounds the rate of early wakes
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._sync_interval * 0.8):
                    await self._wake.wait()
            self._wake.clear()

    # -- internals ------------------------------------------------------------------

    def _entry(self, deployment_id: str) -> _Entry:
        entry = self._entries.get(deployment_id)
        if entry is None:
            breaker = Breaker(self.policy, lease_needed=self._shared is not None)
            entry = self._entries[deployment_id] = _Entry(breaker, HealthReport(deployment_id))
        return entry

    def _notice(
        self, deployment_id: str, old: str, new: str, *, urgent: bool = False, local: bool = True
    ) -> None:
        if old == new and not urgent:
            return
        self._wake.set()
        if old == new:
            return
        change = StateChange(deployment_id, old, new, self._wall(), local)
        for callback in self._callbacks:
            try:
                callback(change)
            except Exception:  # an alert hook must never fail a request
                log.exception("health state-change callback failed")


def _ewma(previous: float | None, sample: float | None, alpha: float) -> float | None:
    if sample is None:
        return previous
    return sample if previous is None else previous + alpha * (sample - previous)


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 3)
