"""Requests per minute, tokens per minute and concurrent requests, checked before the
upstream call: one atomic admission over every matching limit (rates and concurrency slots),
tokens reserved from the estimate and trued up afterwards. Talks to storage only through
CounterStore."""

from __future__ import annotations

import math
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from faregate.policy.durations import format_reset, retry_after_header
from faregate.policy.errors import RateLimitExceeded
from faregate.policy.ratelimit_rules import Applied, Limits, RateLimitConfig
from faregate.policy.subject import Subject
from faregate.store.counters.base import (
    MAX_RATE_UNITS,
    Admission,
    CounterStore,
    LeaseSpec,
    LimitResult,
    LimitSpec,
    PlanAdmission,
    QuickRate,
)

WINDOW_S = 60


@dataclass(frozen=True, slots=True)
class Checked:
    """One rate limit as judged for this request."""

    applied: Applied
    kind: str  # requests | tokens
    spec: LimitSpec
    result: LimitResult


@dataclass(frozen=True, slots=True)
class _Rate:
    """One rate limit of a plan: the rule it comes from, its kind and its counter."""

    applied: Applied
    kind: str  # requests | tokens
    key: str
    limit: int


@dataclass(frozen=True, slots=True)
class _Plan:
    """What the limits of one (subject, model, own limits) are, worked out once: the rate
    counters in checking order, the request specs (their cost is always 1, so the same
    objects serve every request) and the concurrency limits. A request only adds its token
    estimate and its lease id."""

    applied: tuple[Applied, ...]
    rates: tuple[_Rate, ...]
    specs: tuple[LimitSpec | None, ...]  # per rate: the fixed spec, None for a tpm limit
    leases: tuple[tuple[Applied, str, int], ...]  # rule, counter, max concurrent
    ttl_s: float
    kinds: tuple[str, ...]  # per rate: requests | tokens (what the headers are read by)
    # For a store that admits a plan in one synchronous step (`PlanAdmission`): the rates
    # as it takes them, the leases as (counter, max), and the most tokens it may be asked
    # for (the smallest tpm); `one_step` is False when a counter repeats or a limit is
    # invalid, which the general path handles.
    one_step: bool
    quick: tuple[QuickRate, ...]
    quick_leases: tuple[tuple[str, int], ...]
    quick_tokens: int
    lease_ttl_ms: int

    @classmethod
    def of(cls, applied: Sequence[Applied], ttl_s: float) -> _Plan:
        rates: list[_Rate] = []
        for a in applied:
            if a.limits.rpm is not None:
                rates.append(_Rate(a, "requests", f"{a.counter}:req", a.limits.rpm))
            if a.limits.tpm is not None:
                rates.append(_Rate(a, "tokens", f"{a.counter}:tok", a.limits.tpm))
        specs = tuple(
            LimitSpec(r.key, r.limit, WINDOW_S, 1) if r.kind == "requests" else None for r in rates
        )
        leases = tuple(
            (a, f"{a.counter}:conc", a.limits.max_concurrent)
            for a in applied
            if a.limits.max_concurrent is not None
        )
        keys = [r.key for r in rates]
        lease_keys = [key for _, key, _ in leases]
        distinct = len(set(keys)) == len(keys) and len(set(lease_keys)) == len(lease_keys)
        window_ms = LimitSpec("", 1, WINDOW_S).window_ms
        try:  # what `admit` checks per request, once: a cost within the limit stays valid
            for r in rates:
                LimitSpec(r.key, r.limit, WINDOW_S, 1).validate()
            for _, key, limit in leases:
                LeaseSpec(key, limit, "", ttl_s).validate()
        except ValueError:
            distinct = False  # `admit` raises it for each request, as before
        return cls(
            tuple(applied),
            tuple(rates),
            specs,
            leases,
            ttl_s,
            tuple(r.kind for r in rates),
            distinct,
            tuple((r.key, r.limit, window_ms, r.kind == "tokens") for r in rates),
            tuple((key, limit) for _, key, limit in leases),
            min([r.limit for r in rates if r.kind == "tokens"], default=MAX_RATE_UNITS),
            math.ceil(ttl_s * 1000),
        )

    def limit_specs(self, est_tokens: int) -> list[LimitSpec]:
        return [
            LimitSpec(r.key, r.limit, WINDOW_S, est_tokens) if spec is None else spec
            for r, spec in zip(self.rates, self.specs, strict=True)
        ]

    def lease_specs(self, lease_id: str) -> list[LeaseSpec]:
        return [LeaseSpec(key, limit, lease_id, self.ttl_s) for _, key, limit in self.leases]


_NO_PLAN = _Plan((), (), (), (), 0.0, (), False, (), (), 0, 0)


def ratelimit_headers(checked: Sequence[Checked]) -> dict[str, str]:
    """OpenAI's x-ratelimit-* headers, from the most restrictive limit of each kind."""
    return _headers([c.kind for c in checked], [c.result for c in checked])


def _headers(kinds: Sequence[str], results: Sequence[LimitResult]) -> dict[str, str]:
    return _written(
        [
            (kind, r.limit, r.remaining, r.reset_after_s)
            for kind, r in zip(kinds, results, strict=True)
        ]
    )


def _written(figures: Sequence[tuple[str, int, int, float]]) -> dict[str, str]:
    """The headers of (kind, limit, remaining, reset seconds) per rate limit. One pass; the
    first of equally tight limits of a kind wins, as min() would."""
    requests: tuple[str, int, int, float] | None = None
    tokens: tuple[str, int, int, float] | None = None
    for f in figures:
        if f[0] == "requests":
            if requests is None or (f[2], f[1]) < (requests[2], requests[1]):
                requests = f
        elif tokens is None or (f[2], f[1]) < (tokens[2], tokens[1]):
            tokens = f
    headers: dict[str, str] = {}
    if requests is not None:
        headers["x-ratelimit-limit-requests"] = str(requests[1])
        headers["x-ratelimit-remaining-requests"] = str(requests[2])
        headers["x-ratelimit-reset-requests"] = format_reset(requests[3])
    if tokens is not None:
        headers["x-ratelimit-limit-tokens"] = str(tokens[1])
        headers["x-ratelimit-remaining-tokens"] = str(tokens[2])
        headers["x-ratelimit-reset-tokens"] = format_reset(tokens[3])
    return headers


class Permit:
    """Admission of one request. Call `finish` exactly once when the call is over (it is
    idempotent): it trues up the token reservation and frees the concurrency slots."""

    def __init__(
        self,
        store: CounterStore,
        plan: _Plan,
        results: Sequence[LimitResult],
        leases: Sequence[tuple[str, str]],
        est_tokens: int,
    ) -> None:
        self._store = store
        self._plan = plan
        self._results = results
        self._leases = leases
        self.est_tokens = est_tokens
        self._finished = False

    def headers(self) -> dict[str, str]:
        if not self._results:
            return {}
        return _headers(self._plan.kinds, self._results)

    def _delta(self, actual_tokens: int | None) -> int:
        if self._finished:
            return 0
        self._finished = True
        if actual_tokens is None:
            return 0
        return (actual_tokens if actual_tokens > 0 else 0) - self.est_tokens

    async def finish(self, actual_tokens: int | None = None) -> None:
        """`actual_tokens` = input + output as reported; None keeps the estimate."""
        if self._finished:
            return
        delta = self._delta(actual_tokens)
        specs = (
            [
                LimitSpec(r.key, r.limit, WINDOW_S, delta)
                for r in self._plan.rates
                if r.kind == "tokens"
            ]
            if delta
            else []
        )
        if self._leases or specs:
            await self._store.end_admission(self._leases, specs)


class _PlanPermit(Permit):
    """A permit of a plan admitted by a `PlanAdmission` store: the results as the store
    returned them (remaining and reset ms per rate), from which the headers are written."""

    def __init__(
        self, store: PlanAdmission, plan: _Plan, raw: list[int], lease_id: str, est_tokens: int
    ) -> None:
        self._quick = store
        self._plan = plan
        self._raw = raw
        self._lease_id = lease_id
        self.est_tokens = est_tokens
        self._finished = False

    def headers(self) -> dict[str, str]:
        raw = self._raw
        if not raw:
            return {}
        return _written(
            [
                (r.kind, r.limit, raw[2 * i], raw[2 * i + 1] / 1000)
                for i, r in enumerate(self._plan.rates)
            ]
        )

    async def finish(self, actual_tokens: int | None = None) -> None:
        if not self._finished:
            plan = self._plan
            delta = self._delta(actual_tokens)
            self._quick.end_plan(plan.quick_leases, self._lease_id, plan.quick, delta)


def _describe(c: Checked) -> str:
    per = "requests per minute (rpm)" if c.kind == "requests" else "tokens per minute (tpm)"
    return f"{per} for {c.applied.scope} limit '{c.applied.rule_id}'"


PLAN_CACHE_SIZE = 4096


class RateLimiter:
    def __init__(self, store: CounterStore, config: RateLimitConfig) -> None:
        self._store = store
        self._config = config
        # (subject, model, own limits) -> the plan of the limits that apply: the rules are
        # fixed, so matching them and naming their counters again for every request of the
        # same key and model is wasted work.
        self._plans: dict[tuple[Any, ...], _Plan] = {}
        self._plans_config = config
        # An in-process store admits a plan in one synchronous step (store/counters/base.py).
        self._quick = store if isinstance(store, PlanAdmission) else None

    def _plan_of(self, subject: Subject, model: str, own: Mapping[str, Limits] | None) -> _Plan:
        if self._plans_config is not self._config:  # rules replaced: start afresh
            self._plans, self._plans_config = {}, self._config
        key = (subject, model, tuple(own.items()) if own else ())
        plan = self._plans.get(key)
        if plan is None:
            if len(self._plans) >= PLAN_CACHE_SIZE:
                self._plans.clear()
            applied = self._config.applicable(subject, model, own)
            plan = _Plan.of(applied, self._config.lease_ttl_s) if applied else _NO_PLAN
            self._plans[key] = plan
        return plan

    def applicable(
        self, subject: Subject, model: str, own: Mapping[str, Limits] | None = None
    ) -> tuple[Applied, ...]:
        return self._plan_of(subject, model, own).applied

    async def check(
        self,
        subject: Subject,
        model: str,
        est_tokens: int = 0,
        *,
        own: Mapping[str, Limits] | None = None,
        lease_id: str | None = None,
    ) -> Permit:
        """Admit the request or raise RateLimitExceeded (nothing is consumed then).
        `est_tokens` is reserved on every tpm limit: input tokens + expected output."""
        plan = self._plan_of(subject, model, own)
        if plan is _NO_PLAN:
            return Permit(self._store, plan, (), (), est_tokens)
        if est_tokens < 0:
            est_tokens = 0
        lease_id = lease_id or uuid.uuid4().hex
        quick = self._quick
        if quick is not None and plan.one_step and est_tokens <= plan.quick_tokens:
            raw = quick.admit_plan(
                plan.quick, est_tokens, plan.quick_leases, lease_id, plan.lease_ttl_ms
            )
            if raw is not None:
                return _PlanPermit(quick, plan, raw, lease_id, est_tokens)
            # Refused: `admit` judges it again, consuming nothing, and says why.
        specs = plan.limit_specs(est_tokens)
        leases = plan.lease_specs(lease_id)
        admission = await self._store.admit(specs, leases)
        if not admission.allowed:
            checked = [
                Checked(r.applied, r.kind, spec, result)
                for r, spec, result in zip(plan.rates, specs, admission.rates, strict=True)
            ]
            pairs = [(a, lease) for (a, _, _), lease in zip(plan.leases, leases, strict=True)]
            raise self._refusal(checked, pairs, admission)
        return Permit(
            self._store,
            plan,
            admission.rates,
            [(x.key, x.lease_id) for x in leases],
            est_tokens,
        )

    def _refusal(
        self,
        checked: Sequence[Checked],
        leases: Sequence[tuple[Applied, LeaseSpec]],
        admission: Admission,
    ) -> RateLimitExceeded:
        headers = ratelimit_headers(checked)
        refused = [c for c in checked if not c.result.allowed]
        full = [pair for pair, fits in zip(leases, admission.leases, strict=True) if not fits]
        if full:
            return _too_many(headers, refused, *full[0])
        first = refused[0]
        wait = max(c.result.retry_after_s for c in refused)
        if math.isinf(wait):
            return RateLimitExceeded(
                f"Request too large for {_describe(first)}: limit {first.spec.limit}, "
                f"requested {first.spec.cost}. Reduce the prompt or max_tokens.",
                headers=headers,
            )
        _set_retry_after(headers, wait)
        return RateLimitExceeded(
            f"Rate limit reached for {_describe(first)}: limit {first.spec.limit}, "
            f"remaining {first.result.remaining}, requested {first.spec.cost}. "
            f"Please try again in {format_reset(wait)}.",
            headers=headers,
        )


def _set_retry_after(headers: dict[str, str], wait: float) -> None:
    headers["Retry-After"] = retry_after_header(wait)
    headers["retry-after-ms"] = str(max(1, math.ceil(wait * 1000)))


def _too_many(
    headers: dict[str, str], refused: Sequence[Checked], applied: Applied, lease: LeaseSpec
) -> RateLimitExceeded:
    # A slot frees whenever a request ends, so a second is worth waiting; longer when a
    # rate limit refused the same request and has room only later.
    waits = [c.result.retry_after_s for c in refused if not math.isinf(c.result.retry_after_s)]
    _set_retry_after(headers, max([1.0, *waits]))
    return RateLimitExceeded(
        f"Too many concurrent requests for {applied.scope} limit '{applied.rule_id}': "
        f"at most {lease.limit} at a time.",
        headers=headers,
    )
