"""The counter store contract: rate limits, concurrency leases, multi-scope budget holds,
plain counters and cache bytes. Every method is one atomic step in its backend; this module
defines shapes only and imports no backend."""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from operator import itemgetter
from types import MappingProxyType
from typing import NamedTuple, Protocol, runtime_checkable

from faregate.errors import ServiceUnavailable

# Rate-limit state is (limit x window_ms) integers; Lua numbers are exact below 2**53.
MAX_RATE_UNITS = 2**50
NEVER = math.inf
# Amounts are stored as 64-bit integers in Redis; leave headroom for sums.
MAX_NANOS = 2**62
# A finished hold is remembered this long, so a late duplicate settle stays a no-op and a
# settle arriving after its hold expired still records the spend.
HOLD_RECORD_GRACE_S = 24 * 3600


# One rate limit of a rate limiter's plan as `PlanAdmission` takes it: its key, limit,
# window in ms, and whether its cost is the request's tokens (else 1).
QuickRate = tuple[str, int, int, bool]


class CounterStoreUnavailable(ServiceUnavailable):
    code = "counter_store_unavailable"


_NOTHING: Mapping[str, int] = MappingProxyType({})  # a shared default nobody can change

# The shapes made on every request (rate and budget specs, their results, a lease) are
# NamedTuples: as immutable as a frozen dataclass, but built in one step, where a frozen
# dataclass sets each field through object.__setattr__ (several times slower, and a request
# makes about ten of them).


@functools.lru_cache(maxsize=64)  # windows come from configuration: a handful of values
def _window_ms(window_s: float) -> int:
    return max(1, round(window_s * 1000))


class LimitSpec(NamedTuple):
    """One rate limit to check: at most `limit` units of cost per `window_s` seconds."""

    key: str
    limit: int
    window_s: float
    cost: int = 1

    @property
    def window_ms(self) -> int:
        return _window_ms(self.window_s)

    def validate(self, *, allow_negative: bool = False) -> None:
        if self.limit <= 0:
            raise ValueError(f"rate limit for {self.key!r} must be positive")
        if self.cost < 0 and not allow_negative:
            raise ValueError(f"rate limit cost for {self.key!r} must not be negative")
        cost = abs(self.cost)
        units = _window_ms(self.window_s) * (self.limit if self.limit >= cost else cost)
        if units > MAX_RATE_UNITS:
            raise ValueError(f"rate limit for {self.key!r}: limit x window is too large")


class LimitResult(NamedTuple):
    """Outcome of one rate limit (GCRA). `remaining` units fit right now; the bucket is full
    again after `reset_after_s`; a refused request fits after `retry_after_s` (`inf` when
    its cost exceeds the limit itself, 0 when allowed)."""

    allowed: bool
    limit: int
    remaining: int
    reset_after_s: float
    retry_after_s: float


class LeaseSpec(NamedTuple):
    """One concurrency limit to take a slot of: at most `limit` live leases on `key`. The
    lease lives `ttl_s` unless released first, so a dead process's slot frees itself; taking
    a lease id that is already live only renews it."""

    key: str
    limit: int
    lease_id: str
    ttl_s: float

    def validate(self) -> None:
        if self.limit <= 0:
            raise ValueError(f"concurrency limit for {self.key!r} must be positive")
        if not self.ttl_s > 0:
            raise ValueError(f"lease ttl for {self.key!r} must be positive")


_ALLOWED = itemgetter(0)  # LimitResult.allowed, without a generator's frame per request


class Admission(NamedTuple):
    """Outcome of `admit`: each rate spec's result (as `rate_limit_many` reports it) and
    whether each lease found a slot. When `allowed`, every rate spec was consumed and every
    lease taken; otherwise nothing was."""

    rates: tuple[LimitResult, ...]
    leases: tuple[bool, ...]

    @property
    def allowed(self) -> bool:
        return all(map(_ALLOWED, self.rates)) and all(self.leases)


class ReserveSpec(NamedTuple):
    """One budget scope of a reservation. The stored scope is `key:period_key`, so a new
    period starts from zero without any reset job; `ttl_s` keeps a period's counter
    readable for a while after it ends. `limit_nanos=None` tracks without limiting."""

    key: str
    amount_nanos: int
    limit_nanos: int | None
    period_key: str = ""
    ttl_s: float = 0.0

    @property
    def scope(self) -> str:
        return f"{self.key}:{self.period_key}" if self.period_key else self.key

    def validate(self) -> None:
        if not 0 <= self.amount_nanos <= MAX_NANOS:
            raise ValueError(f"reserve amount for {self.scope!r} is out of range")
        if self.limit_nanos is not None and not 0 <= self.limit_nanos <= MAX_NANOS:
            raise ValueError(f"reserve limit for {self.scope!r} is out of range")


class ReserveResult(NamedTuple):
    """`ok` when every scope had room; then the hold was added to all of them. `spent` and
    `held` are each scope's totals as seen before this reservation (keyed by scope)."""

    ok: bool
    failed_key: str | None = None
    spent: Mapping[str, int] = _NOTHING
    held: Mapping[str, int] = _NOTHING


class HoldReused(ValueError):
    """A hold id that was already settled, released or expired was reserved again."""


def ms(now: float | None) -> int | None:
    """Seconds since the epoch -> integer milliseconds (None stays None)."""
    return None if now is None else math.floor(now * 1000)


def settle_amounts(scopes: Sequence[str], actual: int | Mapping[str, int]) -> dict[str, int]:
    """Per-scope actual amounts: one int applies to every scope; a missing scope is 0."""
    if isinstance(actual, int):
        if actual < 0:
            raise ValueError("settled amounts must not be negative")
        return dict.fromkeys(scopes, actual)
    if actual and min(map(int, actual.values())) < 0:
        raise ValueError("settled amounts must not be negative")
    return {s: int(actual.get(s, 0)) for s in scopes}


class CounterStore(Protocol):
    """Shared state for policy and cache. Implementations: MemoryCounterStore (one process)
    and RedisCounterStore (many replicas). Times are seconds since the epoch; `now=None`
    means the backend's own clock (Redis: the server's, so replicas agree)."""

    async def rate_limit(
        self, key: str, limit: int, window_s: float, cost: int = 1, now: float | None = None
    ) -> LimitResult: ...

    async def rate_limit_many(
        self, specs: Sequence[LimitSpec], now: float | None = None
    ) -> list[LimitResult]:
        """Consume every spec, or none of them when any one is refused. Each result says
        whether its own spec would pass; the batch passed only if all are allowed."""
        ...

    async def admit(
        self,
        specs: Sequence[LimitSpec],
        leases: Sequence[LeaseSpec] = (),
        now: float | None = None,
    ) -> Admission:
        """Consume every rate spec and take every lease in one atomic step, or nothing when
        any one is refused: a request is admitted by all of its limits at once."""
        ...

    async def rate_limit_adjust(self, specs: Sequence[LimitSpec], now: float | None = None) -> None:
        """Apply each spec's cost unconditionally (negative refunds), e.g. a token true-up."""
        ...

    async def end_admission(
        self,
        leases: Sequence[tuple[str, str]],
        specs: Sequence[LimitSpec],
        now: float | None = None,
    ) -> None:
        """The end of an admitted request in one step: release each (key, lease id), then
        `rate_limit_adjust` the specs (the token true-up)."""
        ...

    async def acquire_concurrency(
        self, key: str, limit: int, lease_id: str, ttl_s: float, now: float | None = None
    ) -> bool:
        """Take (or renew) one lease: `admit` with that lease alone."""
        ...

    async def release_concurrency(self, key: str, lease_id: str) -> None: ...

    async def in_flight(self, key: str, now: float | None = None) -> int: ...

    async def reserve(
        self,
        scopes: Sequence[ReserveSpec],
        hold_id: str,
        hold_ttl_s: float,
        now: float | None = None,
    ) -> ReserveResult:
        """Add `amount` as a hold on every scope iff spent+held+amount <= limit for all.
        Reserving a pending hold id again is a no-op that reports ok; reusing a finished
        one raises HoldReused."""
        ...

    async def settle(self, hold_id: str, actual: int | Mapping[str, int]) -> dict[str, int]:
        """Turn the hold into spent with the actual amount(s) and drop the rest of the hold.
        Returns each scope's spent after settling; {} when the hold was already finished
        or is unknown (so settling twice changes nothing). A hold swept as expired is
        still settled: the spend happened, only its hold was already released."""
        ...

    async def release(self, hold_id: str) -> None: ...

    async def sweep_expired(self, now: float | None = None) -> int:
        """Release pending holds whose TTL passed (their process died); returns how many."""
        ...

    async def spent(self, key: str) -> int: ...

    async def held(self, key: str) -> int: ...

    async def spent_many(self, keys: Sequence[str]) -> list[int]: ...

    async def incr(self, key: str, amount: int = 1, ttl_s: float | None = None) -> int:
        """Add to a plain integer counter; the TTL is set when the counter is created."""
        ...

    async def get(self, key: str) -> int: ...

    async def get_bytes(self, key: str) -> bytes | None: ...

    async def set_bytes(self, key: str, value: bytes, ttl_s: float | None = None) -> None: ...

    async def delete(self, key: str) -> None: ...


@runtime_checkable
class PlanAdmission(Protocol):
    """What an in-process store (one event loop, no awaiting) may add to the contract: a
    rate limiter's whole plan admitted, and ended, in one synchronous step, with no spec,
    decision or result objects. Judged exactly as `admit` and `end_admission` judge the
    same specs; a store shared between processes does not offer it."""

    def admit_plan(
        self,
        rates: Sequence[QuickRate],
        tokens: int,
        leases: Sequence[tuple[str, int]],
        lease_id: str,
        lease_ttl_ms: int,
    ) -> list[int] | None: ...

    def end_plan(
        self,
        leases: Sequence[tuple[str, int]],
        lease_id: str,
        rates: Sequence[QuickRate],
        tokens: int,
    ) -> None: ...


@runtime_checkable
class PlanHolds(Protocol):
    """What an in-process store may add for budgets: a hold on distinct scopes taken and
    settled in one synchronous step, without spec or result objects, judged as `reserve`
    and `settle` judge it. None from either: the case is not a plain one (a hold id seen
    before, a hold no longer pending), and the general method must judge it."""

    def hold_plan(
        self,
        hold_id: str,
        scopes: Sequence[tuple[str, int | None, float]],
        amounts: Sequence[int],
        hold_ttl_s: float,
    ) -> bool | None: ...

    def settle_plan(self, hold_id: str, amounts: Sequence[int]) -> list[int] | None: ...
