"""MemoryCounterStore: the embedded (single-process) CounterStore. Every method body runs
without awaiting, so on one event loop each call is atomic with no locks. Not shared
between processes: several replicas must use RedisCounterStore."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence

from faregate.store.counters import gcra
from faregate.store.counters.base import (
    NEVER,
    Admission,
    LeaseSpec,
    LimitResult,
    LimitSpec,
    QuickRate,
    ReserveResult,
    ReserveSpec,
)
from faregate.store.counters.lru import ByteLRU
from faregate.store.counters.memory_holds import HoldBook, ttl_ms


def _result(spec: LimitSpec, d: gcra.Decision) -> LimitResult:
    retry = NEVER if d.retry_ms < 0 else d.retry_ms / 1000
    return LimitResult(d.allowed, spec.limit, d.remaining, d.reset_ms / 1000, retry)


def _expiry(now_ms: int, ttl_s: float | None) -> int | None:
    return None if not ttl_s or ttl_s <= 0 else now_ms + math.ceil(ttl_s * 1000)


class MemoryCounterStore:
    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.time,
        cache_max_entries: int = 10_000,
        cache_max_bytes: int = 256 * 2**20,
    ) -> None:
        self._clock = clock
        self._rates: dict[str, tuple[int, int, int]] = {}  # key -> (t_ms, debt, limit)
        self._leases: dict[str, dict[str, int]] = {}  # key -> lease id -> expiry (ms)
        # key -> no lease of it expires before this (ms): a lookup skips the expiry scan
        # until then, instead of walking every in-flight lease on every request.
        self._lease_scan_at: dict[str, int] = {}
        self._ints: dict[str, tuple[int, int | None]] = {}
        self._holds = HoldBook()
        self.cache = ByteLRU(cache_max_entries, cache_max_bytes)

    def _now_ms(self, now: float | None = None) -> int:
        return math.floor((self._clock() if now is None else now) * 1000)

    # -- rate limits -------------------------------------------------------------------

    def _debt(self, key: str, limit: int, now_ms: int) -> int:
        t_ms, debt, _ = self._rates.get(key, (now_ms, 0, limit))
        return gcra.drain(t_ms, debt, now_ms, limit)[1]

    def _store_debt(self, key: str, debt: int, limit: int, now_ms: int, t_ms: int) -> None:
        """`t_ms`: the stored state's time as read (`now_ms` when there was none)."""
        if debt > 0:
            # A caller whose clock runs behind never moves the state back in time.
            self._rates[key] = (now_ms if now_ms >= t_ms else t_ms, debt, limit)
        else:
            self._rates.pop(key, None)

    async def rate_limit(
        self, key: str, limit: int, window_s: float, cost: int = 1, now: float | None = None
    ) -> LimitResult:
        return (await self.rate_limit_many([LimitSpec(key, limit, window_s, cost)], now))[0]

    async def rate_limit_many(
        self, specs: Sequence[LimitSpec], now: float | None = None
    ) -> list[LimitResult]:
        return list((await self.admit(specs, (), now)).rates)

    async def admit(
        self,
        specs: Sequence[LimitSpec],
        leases: Sequence[LeaseSpec] = (),
        now: float | None = None,
    ) -> Admission:
        for spec in specs:
            spec.validate()
        for lease in leases:
            lease.validate()
        now_ms = self._now_ms(now)
        free = self._free_slots(leases, now_ms) if leases else ()
        rates = self._rates
        # key -> (stored time, debt so far in this batch): a repeated key sees the earlier
        # spec's debt, and each key is read once.
        state: dict[str, tuple[int, int]] = {}
        decisions = []
        allowed = all(free)
        for spec in specs:
            key = spec.key
            seen = state.get(key)
            if seen is None:
                t_ms, debt, _ = rates.get(key, (now_ms, 0, spec.limit))
                seen = (t_ms, gcra.drain(t_ms, debt, now_ms, spec.limit)[1])
            decision = gcra.decide(seen[1], spec.limit, spec.window_ms, spec.cost)
            state[key] = (seen[0], decision.debt)
            decisions.append(decision)
            allowed = allowed and decision.allowed
        if allowed:
            for spec in specs:
                t_ms, debt = state[spec.key]
                self._store_debt(spec.key, debt, spec.limit, now_ms, t_ms)
            for lease in leases:
                self._take(lease.key, lease.lease_id, now_ms + math.ceil(lease.ttl_s * 1000))
            return Admission(tuple(map(_result, specs, decisions)), free)
        # Refused: consume nothing. Each verdict stays as judged in order (a repeated key
        # sees the earlier spec), while remaining/reset describe the untouched state.
        results = []
        for spec, decision in zip(specs, decisions, strict=True):
            before = gcra.decide(
                self._debt(spec.key, spec.limit, now_ms), spec.limit, spec.window_ms, 0
            )
            results.append(
                _result(
                    spec, decision._replace(remaining=before.remaining, reset_ms=before.reset_ms)
                )
            )
        return Admission(tuple(results), free)

    # -- the rate limiter's plan, admitted without the general contract's objects -------

    def admit_plan(
        self,
        rates: Sequence[QuickRate],
        tokens: int,
        leases: Sequence[tuple[str, int]],
        lease_id: str,
        lease_ttl_ms: int,
    ) -> list[int] | None:
        """`admit` of a rate limiter's plan, judged exactly as `admit` judges it, for the
        common case: the plan's rate keys are distinct and were validated when it was made
        (RateLimiter's `_Plan`), `tokens` is within every per-token limit, the lease keys
        are distinct. No spec, decision or result objects: returns each rate's remaining
        units and reset in ms, flat (`[remaining, reset_ms, ...]`), every rate consumed
        and every lease taken; or None when any limit refuses, with nothing consumed (the
        caller then asks `admit` for the whole verdict)."""
        now_ms = math.floor(self._clock() * 1000)
        for key, limit in leases:
            live = self._live_leases(key, now_ms)
            if len(live) >= limit and lease_id not in live:
                return None
        stored = self._rates
        judged = []  # per rate: the stored state's time (now when none), the debt after it
        for key, limit, window_ms, per_token in rates:
            t_ms, debt, _ = stored.get(key, (now_ms, 0, limit))
            debt = (
                gcra.drain(t_ms, debt, now_ms, limit)[1] + (tokens if per_token else 1) * window_ms
            )
            if debt > limit * window_ms:
                return None
            judged.append((t_ms, debt))
        out = []
        for (key, limit, window_ms, _), (t_ms, debt) in zip(rates, judged, strict=True):
            self._store_debt(key, debt, limit, now_ms, t_ms)
            out += gcra.admitted(debt, limit, window_ms)
        for key, _ in leases:
            self._take(key, lease_id, now_ms + lease_ttl_ms)
        return out

    def end_plan(
        self,
        leases: Sequence[tuple[str, int]],
        lease_id: str,
        rates: Sequence[QuickRate],
        tokens: int,
    ) -> None:
        """`end_admission` of a plan admitted by `admit_plan`: its leases released, `tokens`
        (a true-up, negative refunds) applied to its per-token rates."""
        for key, _ in leases:
            self._release(key, lease_id)
        if tokens:
            now_ms = math.floor(self._clock() * 1000)
            for key, limit, window_ms, per_token in rates:
                if per_token:
                    self._true_up(key, limit, window_ms, tokens, now_ms)

    async def rate_limit_adjust(self, specs: Sequence[LimitSpec], now: float | None = None) -> None:
        self._adjust(specs, now)

    def _adjust(self, specs: Sequence[LimitSpec], now: float | None) -> None:
        for spec in specs:
            spec.validate(allow_negative=True)
        now_ms = self._now_ms(now)
        for spec in specs:
            self._true_up(spec.key, spec.limit, spec.window_ms, spec.cost, now_ms)

    def _true_up(self, key: str, limit: int, window_ms: int, cost: int, now_ms: int) -> None:
        t_ms, debt, _ = self._rates.get(key, (now_ms, 0, limit))
        debt = gcra.adjust(gcra.drain(t_ms, debt, now_ms, limit)[1], window_ms, cost)
        self._store_debt(key, debt, limit, now_ms, t_ms)

    async def end_admission(
        self,
        leases: Sequence[tuple[str, str]],
        specs: Sequence[LimitSpec],
        now: float | None = None,
    ) -> None:
        # The synchronous steps directly: no coroutine per lease on the request path.
        for key, lease_id in leases:
            self._release(key, lease_id)
        if specs:
            self._adjust(specs, now)

    # -- concurrency -------------------------------------------------------------------

    def _take(self, key: str, lease_id: str, expires: int) -> None:
        live = self._leases.get(key)
        if live is None:
            live = self._leases[key] = {}
        live[lease_id] = expires
        if expires < self._lease_scan_at.get(key, expires + 1):
            self._lease_scan_at[key] = expires

    def _live_leases(self, key: str, now_ms: int) -> dict[str, int]:
        leases = self._leases.get(key, {})
        if leases and now_ms >= self._lease_scan_at.get(key, now_ms):
            for lease_id in [k for k, exp in leases.items() if exp <= now_ms]:
                del leases[lease_id]
            if leases:
                self._lease_scan_at[key] = min(leases.values())
        return leases

    def _free_slots(self, leases: Sequence[LeaseSpec], now_ms: int) -> tuple[bool, ...]:
        """Whether each lease finds a slot, counting the earlier leases of the same batch."""
        # Only the batch's own new lease ids are kept aside: copying every live lease of a
        # key would cost as much as the requests in flight on it.
        added: dict[str, set[str]] = {}
        free = []
        for lease in leases:
            live = self._live_leases(lease.key, now_ms)
            mine = added.get(lease.key, set())
            fits = (
                lease.lease_id in live
                or lease.lease_id in mine
                or len(live) + len(mine) < lease.limit
            )
            if fits and lease.lease_id not in live:
                mine.add(lease.lease_id)
                added[lease.key] = mine
            free.append(fits)
        return tuple(free)

    async def acquire_concurrency(
        self, key: str, limit: int, lease_id: str, ttl_s: float, now: float | None = None
    ) -> bool:
        return (await self.admit((), [LeaseSpec(key, limit, lease_id, ttl_s)], now)).allowed

    async def release_concurrency(self, key: str, lease_id: str) -> None:
        self._release(key, lease_id)

    def _release(self, key: str, lease_id: str) -> None:
        leases = self._leases.get(key)
        if leases is not None:
            leases.pop(lease_id, None)
            if not leases:
                del self._leases[key]
                self._lease_scan_at.pop(key, None)

    async def in_flight(self, key: str, now: float | None = None) -> int:
        return len(self._live_leases(key, self._now_ms(now)))

    # -- holds -------------------------------------------------------------------------

    async def reserve(
        self,
        scopes: Sequence[ReserveSpec],
        hold_id: str,
        hold_ttl_s: float,
        now: float | None = None,
    ) -> ReserveResult:
        for spec in scopes:
            spec.validate()
        ttl_ms = math.ceil(hold_ttl_s * 1000)
        return self._holds.reserve(scopes, hold_id, ttl_ms, self._now_ms(now))

    def hold_plan(
        self,
        hold_id: str,
        scopes: Sequence[tuple[str, int | None, float]],
        amounts: Sequence[int],
        hold_ttl_s: float,
    ) -> bool | None:
        """`reserve` without its objects (PlanHolds): `scopes` as (stored scope, limit or
        None, bucket ttl s), distinct, the amounts within range. True: held; False: a limit
        had no room, nothing held; None: not a fresh hold id, for `reserve` to judge."""
        now_ms = math.floor(self._clock() * 1000)
        ttls = [(scope, limit, ttl_ms(ttl)) for scope, limit, ttl in scopes]
        return self._holds.hold_plan(hold_id, ttls, amounts, math.ceil(hold_ttl_s * 1000), now_ms)

    def settle_plan(self, hold_id: str, amounts: Sequence[int]) -> list[int] | None:
        """`settle` of a pending hold made by `hold_plan`, the amounts in its scopes' order
        and within range: each scope's spent after it; None when the hold is not pending,
        for `settle` to judge."""
        return self._holds.settle_plan(hold_id, amounts, math.floor(self._clock() * 1000))

    async def settle(self, hold_id: str, actual: int | Mapping[str, int]) -> dict[str, int]:
        return self._holds.settle(hold_id, actual, self._now_ms())

    async def release(self, hold_id: str) -> None:
        self._holds.release(hold_id, self._now_ms())

    async def sweep_expired(self, now: float | None = None) -> int:
        now_ms = self._now_ms(now)
        count = self._holds.sweep(now_ms)
        self._purge(now_ms)
        return count

    def _purge(self, now_ms: int) -> None:
        """Drop state that can no longer matter, so long-running processes stay bounded."""
        self._holds.purge(now_ms)
        self.cache.purge(now_ms)
        for key in [k for k, (_, e) in self._ints.items() if e is not None and e <= now_ms]:
            del self._ints[key]
        for key in list(self._leases):
            if not self._live_leases(key, now_ms):
                del self._leases[key]
                self._lease_scan_at.pop(key, None)
        # A drained rate state equals an absent one.
        drained = [
            k for k, (t, d, lim) in self._rates.items() if gcra.drain(t, d, now_ms, lim)[1] == 0
        ]
        for key in drained:
            del self._rates[key]

    async def spent(self, key: str) -> int:
        return self._holds.totals(key, self._now_ms())[0]

    async def held(self, key: str) -> int:
        return self._holds.totals(key, self._now_ms())[1]

    async def spent_many(self, keys: Sequence[str]) -> list[int]:
        now_ms = self._now_ms()
        return [self._holds.totals(k, now_ms)[0] for k in keys]

    # -- plain counters and bytes ------------------------------------------------------

    def _int_entry(self, key: str, now_ms: int) -> tuple[int, int | None] | None:
        entry = self._ints.get(key)
        if entry is not None and entry[1] is not None and entry[1] <= now_ms:
            del self._ints[key]
            return None
        return entry

    async def incr(self, key: str, amount: int = 1, ttl_s: float | None = None) -> int:
        now_ms = self._now_ms()
        value, expires = self._int_entry(key, now_ms) or (0, None)
        if expires is None:
            expires = _expiry(now_ms, ttl_s)
        self._ints[key] = (value + amount, expires)
        return value + amount

    async def get(self, key: str) -> int:
        entry = self._int_entry(key, self._now_ms())
        return entry[0] if entry else 0

    async def get_bytes(self, key: str) -> bytes | None:
        return self.cache.get(key, self._now_ms())

    async def set_bytes(self, key: str, value: bytes, ttl_s: float | None = None) -> None:
        now_ms = self._now_ms()
        self.cache.set(key, bytes(value), _expiry(now_ms, ttl_s))

    async def delete(self, key: str) -> None:
        self.cache.delete(key)
        self._ints.pop(key, None)
