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
    Admission,
    CounterStore,
    LeaseSpec,
    LimitResult,
    LimitSpec,
)

WINDOW_S = 60


@dataclass(frozen=True, slots=True)
class Checked:
    """One rate limit as judged for this request."""

    applied: Applied
    kind: str  # requests | tokens
    spec: LimitSpec
    result: LimitResult


def _tightest(checked: Sequence[Checked], kind: str) -> LimitResult | None:
    results = [c.result for c in checked if c.kind == kind]
    return min(results, key=lambda r: (r.remaining, r.limit), default=None)


def ratelimit_headers(checked: Sequence[Checked]) -> dict[str, str]:
    """OpenAI's x-ratelimit-* headers, from the most restrictive limit of each kind."""
    headers: dict[str, str] = {}
    for kind in ("requests", "tokens"):
        result = _tightest(checked, kind)
        if result is not None:
            headers[f"x-ratelimit-limit-{kind}"] = str(result.limit)
            headers[f"x-ratelimit-remaining-{kind}"] = str(result.remaining)
            headers[f"x-ratelimit-reset-{kind}"] = format_reset(result.reset_after_s)
    return headers


class Permit:
    """Admission of one request. Call `finish` exactly once when the call is over (it is
    idempotent): it trues up the token reservation and frees the concurrency slots."""

    def __init__(
        self,
        store: CounterStore,
        checked: Sequence[Checked],
        leases: Sequence[tuple[str, str]],
        est_tokens: int,
    ) -> None:
        self._store = store
        self.checked = tuple(checked)
        self._leases = tuple(leases)
        self.est_tokens = est_tokens
        self._finished = False

    def headers(self) -> dict[str, str]:
        return ratelimit_headers(self.checked)

    async def finish(self, actual_tokens: int | None = None) -> None:
        """`actual_tokens` = input + output as reported; None keeps the estimate."""
        if self._finished:
            return
        self._finished = True
        delta = 0 if actual_tokens is None else max(actual_tokens, 0) - self.est_tokens
        specs = [
            LimitSpec(c.spec.key, c.spec.limit, c.spec.window_s, delta)
            for c in self.checked
            if c.kind == "tokens" and delta
        ]
        # Sequential on purpose: a gather costs more than these steps do in process.
        for key, lease in self._leases:
            await self._store.release_concurrency(key, lease)
        if specs:
            await self._store.rate_limit_adjust(specs)


def _describe(c: Checked) -> str:
    per = "requests per minute (rpm)" if c.kind == "requests" else "tokens per minute (tpm)"
    return f"{per} for {c.applied.scope} limit '{c.applied.rule_id}'"


PLAN_CACHE_SIZE = 4096


class RateLimiter:
    def __init__(self, store: CounterStore, config: RateLimitConfig) -> None:
        self._store = store
        self._config = config
        # (subject, model, own limits) -> the limits that apply: the rules are fixed, so
        # matching them again for every request of the same key and model is wasted work.
        self._applicable: dict[tuple[Any, ...], tuple[Applied, ...]] = {}
        self._applicable_config = config

    def applicable(
        self, subject: Subject, model: str, own: Mapping[str, Limits] | None = None
    ) -> tuple[Applied, ...]:
        if self._applicable_config is not self._config:  # rules replaced: start afresh
            self._applicable, self._applicable_config = {}, self._config
        key = (subject, model, tuple(own.items()) if own else ())
        applied = self._applicable.get(key)
        if applied is None:
            if len(self._applicable) >= PLAN_CACHE_SIZE:
                self._applicable.clear()
            applied = self._applicable[key] = tuple(self._config.applicable(subject, model, own))
        return applied

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
        applied = self.applicable(subject, model, own)
        if not applied:
            return Permit(self._store, (), (), est_tokens)
        est_tokens = max(est_tokens, 0)
        planned = self._plan(applied, est_tokens)
        leases = self._leases(applied, lease_id or uuid.uuid4().hex)
        admission = await self._store.admit(
            [spec for _, _, spec in planned], [lease for _, lease in leases]
        )
        checked = [
            Checked(a, kind, spec, r)
            for (a, kind, spec), r in zip(planned, admission.rates, strict=True)
        ]
        if not admission.allowed:
            raise self._refusal(checked, leases, admission)
        return Permit(self._store, checked, [(x.key, x.lease_id) for _, x in leases], est_tokens)

    def _leases(self, applied: Sequence[Applied], lease_id: str) -> list[tuple[Applied, LeaseSpec]]:
        ttl = self._config.lease_ttl_s
        return [
            (a, LeaseSpec(f"{a.counter}:conc", a.limits.max_concurrent, lease_id, ttl))
            for a in applied
            if a.limits.max_concurrent is not None
        ]

    @staticmethod
    def _plan(applied: Sequence[Applied], est_tokens: int) -> list[tuple[Applied, str, LimitSpec]]:
        planned: list[tuple[Applied, str, LimitSpec]] = []
        for a in applied:
            if a.limits.rpm is not None:
                planned.append(
                    (a, "requests", LimitSpec(f"{a.counter}:req", a.limits.rpm, WINDOW_S, 1))
                )
            if a.limits.tpm is not None:
                spec = LimitSpec(f"{a.counter}:tok", a.limits.tpm, WINDOW_S, est_tokens)
                planned.append((a, "tokens", spec))
        return planned

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
