from __future__ import annotations

import pytest

from faregate.providers.base import ProviderError
from faregate.routing.breaker import BreakerPolicy
from faregate.routing.health import HealthRegistry, StateChange

from .fakes import FakeClock

OUTAGE = ProviderError("upstream 503", status=503)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def health(clock: FakeClock) -> HealthRegistry:
    return HealthRegistry(clock=clock, wall=lambda: 1_700_000_000.0)


def test_breaker_opens_after_five_consecutive_failures(health: HealthRegistry) -> None:
    for _ in range(4):
        health.observe("a", error=OUTAGE)
        assert health.available("a")
    health.observe("a", error=OUTAGE)
    assert health.state("a") == "open"
    assert not health.available("a")
    assert not health.try_acquire("a")


def test_open_breaker_sends_nothing_during_cooldown_then_lets_one_probe_through(
    health: HealthRegistry, clock: FakeClock
) -> None:
    for _ in range(5):
        health.observe("a", error=OUTAGE)
    clock.advance(29.9)
    assert not health.try_acquire("a")
    assert health.available_in("a") == pytest.approx(0.1)
    clock.advance(0.2)
    assert health.state("a") == "half_open"
    assert health.try_acquire("a")  # the probe
    assert not health.try_acquire("a")  # everyone else skips it meanwhile
    assert not health.available("a")


def test_successful_probe_closes_the_breaker(health: HealthRegistry, clock: FakeClock) -> None:
    for _ in range(5):
        health.observe("a", error=OUTAGE)
    clock.advance(30)
    assert health.try_acquire("a")
    health.observe("a", latency=0.2)
    assert health.state("a") == "closed"
    assert health.try_acquire("a") and health.try_acquire("a")


def test_failed_probe_reopens_for_another_cooldown(
    health: HealthRegistry, clock: FakeClock
) -> None:
    for _ in range(5):
        health.observe("a", error=OUTAGE)
    clock.advance(30)
    assert health.try_acquire("a")
    health.observe("a", error=OUTAGE)
    assert health.state("a") == "open"
    clock.advance(29)
    assert not health.available("a")
    clock.advance(1)
    assert health.available("a")


def test_released_probe_lets_the_next_request_probe(
    health: HealthRegistry, clock: FakeClock
) -> None:
    for _ in range(5):
        health.observe("a", error=OUTAGE)
    clock.advance(30)
    assert health.try_acquire("a")
    health.release("a")  # e.g. the client went away
    assert health.try_acquire("a")


def test_breaker_opens_on_half_the_requests_failing_in_the_window(health: HealthRegistry) -> None:
    for i in range(9):
        health.observe("a", latency=0.1) if i % 2 == 0 else health.observe("a", error=OUTAGE)
    assert health.state("a") == "closed"  # 4 of 9 failed
    health.observe("a", error=OUTAGE)  # 5 of 10
    assert health.state("a") == "open"


def test_failures_older_than_the_window_do_not_count(
    health: HealthRegistry, clock: FakeClock
) -> None:
    for _ in range(4):
        health.observe("a", error=OUTAGE)
        health.observe("a", latency=0.1)
    clock.advance(31)
    for _ in range(6):
        health.observe("a", latency=0.1)
    health.observe("a", error=OUTAGE)
    assert health.state("a") == "closed"  # 1 of 7 in the window, not 5 of 15


def test_retry_after_cools_the_deployment_for_exactly_that_long(
    health: HealthRegistry, clock: FakeClock
) -> None:
    health.observe("a", error=ProviderError("slow down", status=429, retry_after=2.0))
    assert health.state("a") == "closed"
    snapshot = health.snapshot()[0]
    assert snapshot["consecutive_failures"] == 0
    assert snapshot["cooldown_until"] == pytest.approx(1_700_000_002.0)
    clock.advance(1.99)
    assert not health.available("a") and not health.try_acquire("a")
    clock.advance(0.01)
    assert health.available("a") and health.try_acquire("a")


def test_non_retryable_errors_do_not_count_against_health(health: HealthRegistry) -> None:
    for status in (400, 401, 403, 404, 400, 400, 401, 400, 400, 400, 400):
        health.observe("a", error=ProviderError("bad", status=status, retryable=False))
    assert health.state("a") == "closed"
    assert health.snapshot()[0]["window_requests"] == 0


def test_state_changes_reach_callbacks(health: HealthRegistry, clock: FakeClock) -> None:
    changes: list[StateChange] = []
    health.on_change(changes.append)

    def broken(change: StateChange) -> None:
        raise RuntimeError("alert hook down")

    health.on_change(broken)  # a broken hook does not break routing
    for _ in range(5):
        health.observe("a", error=OUTAGE)
    clock.advance(30)
    health.try_acquire("a")
    health.observe("a", latency=0.1)
    assert [(c.deployment_id, c.old, c.new) for c in changes] == [
        ("a", "closed", "open"),
        ("a", "open", "half_open"),
        ("a", "half_open", "closed"),
    ]


def test_snapshot_reports_state_ratio_and_latency(health: HealthRegistry) -> None:
    health.observe("b", latency=0.2, ttft=0.05)
    health.observe("b", latency=0.4)
    health.observe("b", error=OUTAGE)
    health.observe("a", latency=0.1)
    rows = {row["deployment"]: row for row in health.snapshot()}
    assert list(rows) == ["a", "b"]
    b = rows["b"]
    assert b["state"] == "closed"
    assert b["consecutive_failures"] == 1
    assert b["error_ratio"] == pytest.approx(1 / 3, abs=1e-4)
    assert b["ewma_latency_ms"] == pytest.approx(260.0)  # 200 + 0.3 * (400 - 200)
    assert b["ewma_ttft_ms"] == pytest.approx(50.0)
    assert b["cooldown_until"] is None and b["open_until"] is None


def test_policy_is_configurable(clock: FakeClock) -> None:
    health = HealthRegistry(BreakerPolicy(failure_threshold=2, cooldown_seconds=5), clock=clock)
    health.observe("a", error=OUTAGE)
    health.observe("a", error=OUTAGE)
    assert health.state("a") == "open"
    clock.advance(5)
    assert health.state("a") == "half_open"
