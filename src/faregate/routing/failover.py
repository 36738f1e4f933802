"""Runs one request along a routing plan: tries deployments in order, moves on (or retries
with jittered backoff) on retryable provider errors, enforces the request's deadline and
records every outcome in health. It never chooses the order; the router does."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, NoReturn, Protocol, TypeVar

from faregate.config import Deployment
from faregate.errors import FaregateError, UpstreamTimeout
from faregate.providers.base import ProviderError
from faregate.routing.errors import NoHealthyDeployment
from faregate.routing.health import FAILURE, classify
from faregate.routing.limits import DeploymentLimitReached, DeploymentLimits

T = TypeVar("T")
CONTEXT_LENGTH_EXCEEDED = "context_length_exceeded"


class FailoverHealth(Protocol):
    """The part of HealthRegistry failover uses."""

    def try_acquire(self, deployment_id: str) -> bool: ...

    def release(self, deployment_id: str) -> None: ...

    def available_in(self, deployment_id: str) -> float: ...

    def observe_latency(
        self, deployment_id: str, *, latency: float | None = None, ttft: float | None = None
    ) -> None: ...

    def observe(
        self,
        deployment_id: str,
        *,
        latency: float | None = None,
        ttft: float | None = None,
        error: BaseException | None = None,
    ) -> None: ...


@dataclass(frozen=True, slots=True)
class FailedAttempt:
    deployment: Deployment
    error: FaregateError
    elapsed: float


@dataclass(slots=True)
class Attempted(Generic[T]):
    result: T
    deployment: Deployment  # the one that answered
    attempts: int  # calls made, this one included
    errors: list[FailedAttempt] = field(default_factory=list)  # earlier failures, in order


async def call_with_failover(
    plan: Sequence[Deployment],
    attempt: Callable[[Deployment], Awaitable[T]],
    *,
    health: FailoverHealth,
    deadline: float,
    max_attempts: int | None = None,
    context_plan: Sequence[Deployment] = (),
    backoff_base: float = 0.05,
    backoff_max: float = 2.0,
    rng: random.Random | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    first_chunk: bool = False,
    limits: DeploymentLimits | None = None,
    tokens: int = 0,
) -> Attempted[T]:
    """Call `attempt` on the plan's deployments until one succeeds.

    - A retryable ProviderError (429, 5xx, timeout, connection) moves to the next
      deployment; after a full pass the still-available ones are tried again after a
      jittered exponential backoff (so a single deployment is retried), waiting out a
      Retry-After when it fits in the deadline. At most `max_attempts` calls
      (default: len(plan) + 2).
    - Any other error is raised at once; a `context_length_exceeded` error switches,
      once, to `context_plan` (less the deployment that refused the prompt).
    - The error raised carries the calls made (`attempts`) and the last deployment
      called (`last_deployment`), for the request's record.
    - `deadline` (on `clock`, time.monotonic by default) bounds every attempt; when it
      passes UpstreamTimeout (504) is raised. A deployment's own `timeout` is a retryable
      failure. When every attempt failed, the last error is raised again.
    - `first_chunk=True` records the attempt's duration as time to first token, not
      latency, and leaves the verdict on the deployment that answered to the caller; see
      `connect_stream_with_failover`.
    - With `limits`, a deployment at its `rpm` / `tpm` (the call counting `tokens`) is
      skipped like one cooling down; when every one is, 429 DeploymentLimitReached.
    """
    run = _Failover(
        attempt,
        health,
        deadline,
        max_attempts or len(plan) + 2,
        rng,
        clock,
        sleep,
        first_chunk,
        backoff_base,
        backoff_max,
        limits,
        tokens,
    )
    candidates, switched = list(plan), False
    while True:
        try:
            return await run.until_success(candidates)
        except FaregateError as exc:
            exc.attempts, exc.last_deployment = run.attempts, run.last
            if exc.code != CONTEXT_LENGTH_EXCEEDED or switched:
                raise
            # Never back to the deployment that refused the prompt: when it fitted none of
            # the group's own deployments, the plan already was the context fallbacks.
            refused = run.last.id if run.last is not None else None
            candidates, switched = [d for d in context_plan if d.id != refused], True
            if not candidates:
                raise


async def connect_stream_with_failover(
    plan: Sequence[Deployment],
    connect: Callable[[Deployment], Awaitable[T]],
    **options: Any,
) -> Attempted[T]:
    """Failover for streams, up to the first chunk only.

    `connect(deployment)` must return as soon as the first chunk has arrived (for example
    the first chunk plus the open iterator) and send nothing to the client itself. Failover
    happens only inside that phase; once the caller forwards the first byte, a later error
    ends the stream and is not retried. The connect time is recorded as time to first
    token; whether the deployment served well is known only when the stream ends, so the
    caller reports it then: `health.observe(id)` when it completed,
    `health.observe(id, error=...)` when it broke (so breakers see mid-stream failures), or
    `health.release(id)` when nobody can tell (the client went away).
    """
    return await call_with_failover(plan, connect, first_chunk=True, **options)


class _AttemptTimer:
    """What `asyncio.timeout` does for one attempt, at about half its cost (it showed in
    the gateway's profile): one timer handle that cancels the task when it fires. `stop()`
    cancels the timer and says whether the task's cancellation was this timer's doing.
    The caller passes the running loop: on Python 3.11 `asyncio.current_task()` and
    `get_running_loop()` make a getpid() system call each time."""

    __slots__ = ("_cancelling", "_handle", "_task", "fired")

    def __init__(self, loop: asyncio.AbstractEventLoop, delay: float) -> None:
        task = asyncio.current_task(loop)
        if task is None:
            raise RuntimeError("an attempt deadline needs a running task")
        self._task = task
        self._cancelling = task.cancelling()
        self.fired = False
        self._handle = loop.call_later(delay, self._fire)

    def _fire(self) -> None:
        self.fired = True
        self._task.cancel()

    def stop(self) -> bool:
        self._handle.cancel()
        return self.fired and self._task.uncancel() <= self._cancelling


class _Failover(Generic[T]):
    def __init__(
        self,
        attempt: Callable[[Deployment], Awaitable[T]],
        health: FailoverHealth,
        deadline: float,
        limit: int,
        rng: random.Random | None,  # None: the random module's (only read on a retry)
        clock: Callable[[], float],
        sleep: Callable[[float], Awaitable[None]],
        first_chunk: bool,
        backoff_base: float,
        backoff_max: float,
        limits: DeploymentLimits | None,
        tokens: int,
    ) -> None:
        self.attempt, self.health, self.deadline, self.limit = attempt, health, deadline, limit
        self.rng, self.clock, self.sleep, self.first_chunk = rng, clock, sleep, first_chunk
        self.backoff_base, self.backoff_max = backoff_base, backoff_max
        self.limits, self.tokens = limits, tokens
        self.loop = asyncio.get_running_loop()
        self.attempts = 0
        self.last: Deployment | None = None  # the deployment called last
        self.errors: list[FailedAttempt] = []
        # Deployments this request already reported a breaker failure of (see `_failed`).
        self.failed: set[str] = set()
        # deployment id -> clock time it fits its rpm / tpm again (skipped until then)
        self.limited: dict[str, float] = {}

    async def until_success(self, candidates: list[Deployment]) -> Attempted[T]:
        rounds = 0
        while True:
            called = self.attempts
            done = await self._pass(candidates)
            if done is not None:
                return done
            idle = self.attempts == called  # every candidate still cooling down or limited
            rounds += not idle
            await self._pause(candidates, rounds, idle)

    async def _pass(self, candidates: list[Deployment]) -> Attempted[T] | None:
        for deployment in candidates:
            if self.attempts >= self.limit:
                break
            if not self.health.try_acquire(deployment.id):
                continue  # opened, cooling down, or another request holds the probe
            if self.limits is not None and not await self._admitted(deployment):
                continue
            self.attempts += 1
            self.last = deployment
            started = self.clock()
            try:
                result = await self._one(deployment)
            except ProviderError as exc:
                if not exc.retryable:
                    raise
                self.errors.append(FailedAttempt(deployment, exc, self.clock() - started))
                continue
            return Attempted(result, deployment, self.attempts, self.errors)
        return None

    async def _admitted(self, deployment: Deployment) -> bool:
        wait = await self.limits.admit(deployment, self.tokens) if self.limits else 0.0
        if wait:
            self.health.release(deployment.id)  # a probe slot taken for nothing
            self.limited[deployment.id] = self.clock() + wait
        return not wait

    def _wait(self, deployment: Deployment) -> float:
        """Seconds until `deployment` may be tried: health's view, or its rate limit."""
        rate = self.limited.get(deployment.id, 0.0) - self.clock()
        return max(self.health.available_in(deployment.id), rate, 0.0)

    async def _one(self, deployment: Deployment) -> T:
        remaining = self.deadline - self.clock()
        if remaining <= 0:
            self.health.release(deployment.id)
            raise UpstreamTimeout("The request deadline passed before an upstream answered")
        limit = min(remaining, deployment.timeout) if deployment.timeout else remaining
        started = self.clock()
        timer = _AttemptTimer(self.loop, limit)
        try:
            result = await self.attempt(deployment)
        except BaseException as exc:
            ours = timer.stop()
            if isinstance(exc, TimeoutError) or (ours and isinstance(exc, asyncio.CancelledError)):
                error = ProviderError(
                    f"{deployment.id} did not answer within {limit:.2f} s",
                    status=504,
                    code="upstream_timeout",
                    retryable=True,
                )
                self._failed(deployment, error)
                if timer.fired and limit >= remaining:
                    self.errors.append(FailedAttempt(deployment, error, self.clock() - started))
                    raise UpstreamTimeout(
                        "The request deadline passed before an upstream answered"
                    ) from None
                raise error from None
            if isinstance(exc, ProviderError):
                self._failed(deployment, exc)
            else:
                self.health.release(deployment.id)
            raise
        timer.stop()
        elapsed = self.clock() - started
        if self.first_chunk:  # the stream's verdict comes when it ends (see above)
            self.health.observe_latency(deployment.id, ttft=elapsed)
        else:
            self.health.observe(deployment.id, latency=elapsed)
        return result

    def _failed(self, deployment: Deployment, error: ProviderError) -> None:
        """Report a failed attempt to the deployment's health, counting a request once: its
        retries on a deployment that already failed it free their probe slot and add no
        failure. A request the upstream fails every time (a body it cannot handle) would
        otherwise open the breaker by itself, with its own retries, and take the deployment
        from every other request. A cooldown (429 with Retry-After) is always reported."""
        if classify(error)[0] == FAILURE:
            if deployment.id in self.failed:
                self.health.release(deployment.id)
                return
            self.failed.add(deployment.id)
        self.health.observe(deployment.id, error=error)

    async def _pause(self, candidates: list[Deployment], rounds: int, idle: bool) -> None:
        """Sleep before the next pass, or raise when no further attempt can help. After a
        pass that called nobody (a cooldown not quite over when it ran: a timer may fire a
        little early) the wait is only what is left of the soonest one, no backoff."""
        if self.attempts >= self.limit or not candidates:
            self._give_up(candidates, 0.0)
        last = self.errors[-1].error if self.errors else None
        retry_after = getattr(last, "retry_after", None) or 0.0
        soonest = min(self._wait(d) for d in candidates)
        if soonest > max(self.backoff_max, retry_after):
            self._give_up(candidates, soonest)
        if idle and soonest > 0:
            delay = soonest
        else:
            cap = min(self.backoff_max, self.backoff_base * 2 ** (max(rounds, 1) - 1))
            jitter = (self.rng or random).uniform(0, cap / 2)
            delay = max(cap / 2 + jitter, soonest)
        if self.clock() + delay >= self.deadline:
            self._give_up(candidates, soonest)
        await self.sleep(delay)

    def _give_up(self, candidates: list[Deployment], soonest: float) -> NoReturn:
        if self.errors:
            raise self.errors[-1].error
        group = candidates[0].group if candidates else "this model"
        if self.limited:
            raise DeploymentLimitReached(group, soonest)
        raise NoHealthyDeployment(group, soonest)
