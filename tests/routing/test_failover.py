from __future__ import annotations

import asyncio
import dataclasses
import random
import time
from collections import Counter

import pytest

from faregate.config import Deployment
from faregate.errors import InvalidRequest, UpstreamTimeout
from faregate.providers.base import ProviderError
from faregate.routing.base import RouteRequest
from faregate.routing.errors import NoHealthyDeployment
from faregate.routing.failover import call_with_failover, connect_stream_with_failover
from faregate.routing.health import HealthRegistry
from faregate.routing.limits import DeploymentLimitReached, DeploymentLimits
from faregate.routing.router import Router
from faregate.store.counters import MemoryCounterStore

from .fakes import FakeClock, dep, group, groups

OUTAGE = ProviderError("upstream 503", status=503)


def soon(seconds: float = 5.0) -> float:
    return time.monotonic() + seconds


async def test_primary_failing_thirty_percent_still_serves_every_call() -> None:
    health = HealthRegistry()
    router = Router(groups(group("chat", "primary", "secondary")), health=health)
    rng = random.Random(42)
    served: Counter[str] = Counter()

    async def flaky(d: Deployment) -> str:
        if d.id == "primary" and rng.random() < 0.3:
            raise ProviderError("primary hiccup", status=502)
        return d.id

    chat = router.resolve("chat")
    for _ in range(1000):
        plan = router.plan(chat, RouteRequest())
        done = await call_with_failover(plan, flaky, health=health, deadline=soon(), rng=rng)
        served[done.result] += 1
        assert done.attempts == len(done.errors) + 1
    assert sum(served.values()) == 1000
    assert served["primary"] > 0 and served["secondary"] > 0


async def test_failover_reports_each_failed_attempt_and_the_winner() -> None:
    health = HealthRegistry()

    async def attempt(d: Deployment) -> str:
        if d.id != "c":
            raise ProviderError(f"{d.id} down", status=503)
        return "ok"

    done = await call_with_failover(
        [dep("a"), dep("b"), dep("c")], attempt, health=health, deadline=soon()
    )
    assert (done.result, done.deployment.id, done.attempts) == ("ok", "c", 3)
    assert [(f.deployment.id, f.error.status) for f in done.errors] == [("a", 503), ("b", 503)]
    assert health.latency("c").latency is not None
    assert health.snapshot()[0]["consecutive_failures"] == 1


async def test_deadline_holds_against_a_hanging_upstream() -> None:
    health = HealthRegistry()

    async def hang(d: Deployment) -> str:
        await asyncio.sleep(60)
        return "never"

    plan = [dep("a"), dep("b"), dep("c"), dep("d")]
    started = time.monotonic()
    with pytest.raises(UpstreamTimeout) as caught:
        await call_with_failover(plan, hang, health=health, deadline=soon(0.3))
    # One 0.3 s deadline for the whole call, not one per deployment (that would take 1.2 s),
    # and nowhere near the 60 s hang; 0.7 s of slack for a loaded machine.
    assert time.monotonic() - started < 1.0
    assert (caught.value.status, caught.value.code) == (504, "upstream_timeout")
    assert health.snapshot()[0]["consecutive_failures"] == 1  # the hang counts against "a"


async def test_a_deployment_timeout_moves_on_to_the_next_deployment() -> None:
    async def attempt(d: Deployment) -> str:
        if d.id == "slow":
            await asyncio.sleep(60)
        return d.id

    plan = [dep("slow", timeout=0.05), dep("fast")]
    done = await call_with_failover(plan, attempt, health=HealthRegistry(), deadline=soon())
    assert done.result == "fast"
    assert done.errors[0].error.code == "upstream_timeout"


async def test_non_retryable_errors_are_raised_at_once() -> None:
    calls: list[str] = []

    async def attempt(d: Deployment) -> str:
        calls.append(d.id)
        raise ProviderError("bad request", status=400, code="invalid_request", retryable=False)

    with pytest.raises(ProviderError) as caught:
        await call_with_failover(
            [dep("a"), dep("b")], attempt, health=HealthRegistry(), deadline=soon()
        )
    assert caught.value.status == 400
    assert calls == ["a"]


async def test_errors_of_the_gateway_itself_are_not_retried() -> None:
    calls: list[str] = []

    async def attempt(d: Deployment) -> str:
        calls.append(d.id)
        raise InvalidRequest("unsupported parameter", param="logit_bias")

    with pytest.raises(InvalidRequest):
        await call_with_failover(
            [dep("a"), dep("b")], attempt, health=HealthRegistry(), deadline=soon()
        )
    assert calls == ["a"]


async def test_when_everything_fails_the_last_error_is_raised() -> None:
    calls: list[str] = []

    async def attempt(d: Deployment) -> str:
        calls.append(d.id)
        raise ProviderError(f"{d.id} broke", status=502 if d.id == "a" else 503)

    with pytest.raises(ProviderError) as caught:
        await call_with_failover(
            [dep("a"), dep("b")],
            attempt,
            health=HealthRegistry(),
            deadline=soon(),
            max_attempts=4,
            backoff_base=0.001,
        )
    assert calls == ["a", "b", "a", "b"]
    assert caught.value.status == 503


async def test_a_lone_deployment_is_retried_with_growing_jittered_backoff() -> None:
    clock = FakeClock()
    sleeps: list[float] = []
    calls = 0

    async def record_sleep(seconds: float) -> None:
        sleeps.append(seconds)
        clock.advance(seconds)

    async def attempt(d: Deployment) -> str:
        nonlocal calls
        calls += 1
        if calls < 4:
            raise OUTAGE
        return "ok"

    done = await call_with_failover(
        [dep("only")],
        attempt,
        health=HealthRegistry(clock=clock),
        deadline=clock() + 60,
        max_attempts=5,
        backoff_base=0.1,
        clock=clock,
        sleep=record_sleep,
        rng=random.Random(1),
    )
    assert done.attempts == 4
    assert 0.05 <= sleeps[0] <= 0.1 and 0.1 <= sleeps[1] <= 0.2 and 0.2 <= sleeps[2] <= 0.4


async def test_one_request_failing_on_every_retry_does_not_open_the_breaker() -> None:
    # A body the upstream answers with a 5xx every time (a poison request): its five
    # attempts on the lone deployment count as one failure, so the deployment stays open to
    # every other request. Five requests failing it still open it.
    health = HealthRegistry()
    calls = 0

    async def poisoned(d: Deployment) -> str:
        nonlocal calls
        calls += 1
        raise ProviderError("upstream 500", status=502)

    with pytest.raises(ProviderError):
        await call_with_failover(
            [dep("only")],
            poisoned,
            health=health,
            deadline=soon(),
            max_attempts=5,
            backoff_base=0.001,
        )
    assert calls == 5
    assert health.state("only") == "closed"
    assert health.snapshot()[0]["consecutive_failures"] == 1
    for _ in range(4):
        with pytest.raises(ProviderError):
            await call_with_failover(
                [dep("only")], poisoned, health=health, deadline=soon(), max_attempts=1
            )
    assert health.state("only") == "open"


async def test_each_request_counts_once_per_deployment_it_failed_on() -> None:
    health = HealthRegistry()

    async def attempt(d: Deployment) -> str:
        raise ProviderError(f"{d.id} down", status=503)

    with pytest.raises(ProviderError):
        await call_with_failover(
            [dep("a"), dep("b")],
            attempt,
            health=health,
            deadline=soon(),
            max_attempts=6,
            backoff_base=0.001,
        )
    failures = {row["deployment"]: row["consecutive_failures"] for row in health.snapshot()}
    assert failures == {"a": 1, "b": 1}


async def test_retry_after_two_seconds_is_honoured_before_retrying() -> None:
    clock = FakeClock()
    health = HealthRegistry(clock=clock)
    attempts_at: list[float] = []

    async def attempt(d: Deployment) -> str:
        attempts_at.append(clock())
        if len(attempts_at) == 1:
            raise ProviderError("rate limited", status=429, retry_after=2.0)
        return "ok"

    done = await call_with_failover(
        [dep("only")], attempt, health=health, deadline=clock() + 30, clock=clock, sleep=clock.sleep
    )
    assert done.result == "ok"
    assert attempts_at[1] - attempts_at[0] >= 2.0
    assert health.state("only") == "closed"


async def test_retry_after_beyond_the_deadline_returns_the_429() -> None:
    clock = FakeClock()

    async def attempt(d: Deployment) -> str:
        raise ProviderError("rate limited", status=429, retry_after=20.0)

    with pytest.raises(ProviderError) as caught:
        await call_with_failover(
            [dep("only")],
            attempt,
            health=HealthRegistry(clock=clock),
            deadline=clock() + 5,
            clock=clock,
            sleep=clock.sleep,
        )
    assert caught.value.status == 429
    assert caught.value.headers["Retry-After"] == "20"


async def test_cooling_deployment_gets_no_attempt_while_another_can_serve() -> None:
    clock = FakeClock()
    health = HealthRegistry(clock=clock)
    health.observe("a", error=ProviderError("rate limited", status=429, retry_after=2.0))
    calls: list[str] = []

    async def attempt(d: Deployment) -> str:
        calls.append(d.id)
        return d.id

    for _ in range(3):
        await call_with_failover(
            [dep("a"), dep("b")], attempt, health=health, deadline=clock() + 5, clock=clock
        )
        clock.advance(0.5)
    assert calls == ["b", "b", "b"]
    clock.advance(0.5)
    await call_with_failover(
        [dep("a"), dep("b")], attempt, health=health, deadline=clock() + 5, clock=clock
    )
    assert calls[-1] == "a"


async def test_half_open_deployment_takes_one_probe_while_others_fail_over() -> None:
    clock = FakeClock()
    health = HealthRegistry(clock=clock)
    for _ in range(5):
        health.observe("a", error=OUTAGE)
    clock.advance(30)
    release = asyncio.Event()
    calls: list[str] = []

    async def attempt(d: Deployment) -> str:
        calls.append(d.id)
        if d.id == "a":
            await release.wait()
        return d.id

    plan = [dep("a"), dep("b")]
    probe = asyncio.create_task(call_with_failover(plan, attempt, health=health, deadline=soon()))
    await asyncio.sleep(0)
    others = [
        await call_with_failover(plan, attempt, health=health, deadline=soon()) for _ in range(3)
    ]
    release.set()
    assert (await probe).result == "a"
    assert [o.result for o in others] == ["b", "b", "b"]
    assert calls.count("a") == 1
    assert health.state("a") == "closed"


async def test_context_length_error_switches_to_the_context_window_plan() -> None:
    calls: list[str] = []

    async def attempt(d: Deployment) -> str:
        calls.append(d.id)
        if d.id == "small":
            raise ProviderError(
                "too long", status=400, code="context_length_exceeded", retryable=False
            )
        return d.id

    done = await call_with_failover(
        [dep("small"), dep("sibling")],
        attempt,
        health=HealthRegistry(),
        deadline=soon(),
        context_plan=[dep("large")],
    )
    assert done.result == "large"
    assert calls == ["small", "large"]


async def test_a_context_fallback_that_refuses_the_prompt_is_not_called_again() -> None:
    # The prompt fitted none of the group's own deployments, so the plan already was the
    # context fallbacks: "switching" to them would call the same deployment again.
    calls: list[str] = []

    async def attempt(d: Deployment) -> str:
        calls.append(d.id)
        raise ProviderError("too long", status=400, code="context_length_exceeded", retryable=False)

    with pytest.raises(ProviderError) as caught:
        await call_with_failover(
            [dep("large")],
            attempt,
            health=HealthRegistry(),
            deadline=soon(),
            context_plan=[dep("large"), dep("larger")],
        )
    assert calls == ["large", "larger"]
    assert caught.value.code == "context_length_exceeded"
    assert (caught.value.attempts, caught.value.last_deployment.id) == (2, "larger")


async def test_the_error_of_a_request_that_failed_everywhere_carries_its_calls() -> None:
    clock = FakeClock()
    calls: list[str] = []

    async def attempt(d: Deployment) -> str:
        calls.append(d.id)
        raise ProviderError(f"{d.id} down", status=503)

    with pytest.raises(ProviderError) as caught:
        await call_with_failover(
            [dep("a"), dep("b")],
            attempt,
            health=HealthRegistry(clock=clock),
            deadline=clock() + 30,
            max_attempts=3,
            clock=clock,
            sleep=clock.sleep,
        )
    assert calls == ["a", "b", "a"]
    assert (caught.value.attempts, caught.value.last_deployment.id) == (3, "a")


async def test_a_retry_after_is_retried_as_soon_as_it_ends_even_when_a_timer_fires_early() -> None:
    # The event loop may wake a sleeper a hair before the cooldown is over: the pass that
    # then finds nothing to call must wait only what is left, not a jittered backoff more.
    clock = FakeClock()
    health = HealthRegistry(clock=clock)
    attempts_at: list[float] = []

    async def early_sleep(seconds: float) -> None:
        clock.advance(seconds - 0.001 if seconds > 0.5 else seconds)  # a millisecond early

    async def attempt(d: Deployment) -> str:
        attempts_at.append(clock())
        if len(attempts_at) == 1:
            raise ProviderError("rate limited", status=429, retry_after=1.0)
        return "ok"

    done = await call_with_failover(
        [dep("only")], attempt, health=health, deadline=clock() + 30, clock=clock, sleep=early_sleep
    )
    assert done.result == "ok"
    assert 1.0 <= attempts_at[1] - attempts_at[0] < 1.0 + 0.005


async def test_nothing_acquirable_is_a_503() -> None:
    health = HealthRegistry()
    for _ in range(5):
        health.observe("a", error=OUTAGE)

    async def attempt(d: Deployment) -> str:
        return d.id

    with pytest.raises(NoHealthyDeployment):
        await call_with_failover([dep("a")], attempt, health=health, deadline=soon())


async def test_stream_connect_fails_over_and_records_time_to_first_token() -> None:
    health = HealthRegistry()

    async def connect(d: Deployment) -> tuple[str, str]:
        if d.id == "a":
            raise ProviderError("connection reset", status=502)
        await asyncio.sleep(0.01)
        return d.id, "first chunk"

    done = await connect_stream_with_failover(
        [dep("a"), dep("b")], connect, health=health, deadline=soon()
    )
    assert done.result == ("b", "first chunk")
    stats = health.latency("b")
    assert stats.ttft is not None and stats.ttft >= 0.01
    assert stats.latency is None


async def test_a_stream_connect_leaves_the_verdict_to_the_end_of_the_stream() -> None:
    clock = FakeClock()
    health = HealthRegistry(clock=clock)
    for _ in range(4):
        health.observe("a", error=OUTAGE)

    async def connect(d: Deployment) -> str:
        return d.id

    await connect_stream_with_failover([dep("a")], connect, health=health, deadline=soon())
    [row] = [r for r in health.snapshot() if r["deployment"] == "a"]
    assert row["consecutive_failures"] == 4  # a first chunk proves little
    health.observe("a", error=ProviderError("cut mid-stream", status=502))
    assert health.state("a") == "open"

    clock.advance(30)  # half-open: the probe's slot stays taken until the stream ends
    await connect_stream_with_failover([dep("a")], connect, health=health, deadline=soon())
    assert not health.available("a")
    health.observe("a")
    assert health.state("a") == "closed"


async def test_cancelled_probe_gives_its_slot_back() -> None:
    clock = FakeClock()
    health = HealthRegistry(clock=clock)
    for _ in range(5):
        health.observe("a", error=OUTAGE)
    clock.advance(30)

    async def hang(d: Deployment) -> str:
        await asyncio.sleep(60)
        return d.id

    task = asyncio.create_task(call_with_failover([dep("a")], hang, health=health, deadline=soon()))
    await asyncio.sleep(0.01)
    assert not health.available("a")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert health.try_acquire("a")


async def test_a_deployment_at_its_rpm_is_skipped_and_a_short_wait_is_waited_out() -> None:
    health, limits = HealthRegistry(), DeploymentLimits(MemoryCounterStore(), window_s=0.3)
    limited = dataclasses.replace(dep("a"), rpm=1)
    calls: list[str] = []

    async def attempt(d: Deployment) -> str:
        calls.append(d.id)
        return d.id

    plan = [limited, dep("b")]
    first = await call_with_failover(plan, attempt, health=health, deadline=soon(), limits=limits)
    second = await call_with_failover(plan, attempt, health=health, deadline=soon(), limits=limits)
    assert (first.result, second.result, second.attempts) == ("a", "b", 1)
    # Alone, the limited deployment is tried again once its 0.3 s window refilled.
    started = time.monotonic()
    third = await call_with_failover(
        [limited], attempt, health=health, deadline=soon(), limits=limits
    )
    assert third.result == "a" and 0.2 <= time.monotonic() - started < 1.0
    assert calls == ["a", "b", "a"]


async def test_every_deployment_at_its_limit_for_long_is_a_429_with_retry_after() -> None:
    limits = DeploymentLimits(MemoryCounterStore())  # rpm 1 a minute: refills in 60 s
    plan = [dataclasses.replace(dep("a"), rpm=1), dataclasses.replace(dep("b"), tpm=100)]

    async def attempt(d: Deployment) -> str:
        return d.id

    health = HealthRegistry()
    for one in plan:  # a takes its one request; b a call bigger than its tpm, counted as 100
        await call_with_failover(
            [one], attempt, health=health, deadline=soon(), limits=limits, tokens=500
        )
    with pytest.raises(DeploymentLimitReached) as caught:
        await call_with_failover(
            plan, attempt, health=health, deadline=soon(), limits=limits, tokens=500
        )
    assert caught.value.status == 429 and 55 <= caught.value.retry_after <= 60
