"""The in-process hold book behind MemoryCounterStore.reserve/settle/release: budget
buckets (spent, held) and two-phase holds. Synchronous on purpose: each call runs to
completion on the event loop, which is what makes it atomic. No clock of its own.

Memory stays bounded under steady traffic: a settled or released hold leaves only a small
record (its final state), kept for the grace period but at most `max_finished` of them,
oldest dropped first; the expiry heap is compacted when settled holds dominate it.
"""

from __future__ import annotations

import heapq
import math
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from faregate.store.counters.base import (
    HOLD_RECORD_GRACE_S,
    HoldReused,
    ReserveResult,
    ReserveSpec,
    settle_amounts,
)

RECORD_GRACE_MS = HOLD_RECORD_GRACE_S * 1000
MAX_FINISHED = 10_000  # finished-hold records remembered (to refuse a reused hold id)


@dataclass(slots=True)
class _Bucket:
    spent: int = 0
    held: int = 0
    expires_ms: int | None = None


@dataclass(slots=True)
class _Hold:
    state: str  # pending | settled | released | expired
    expires_ms: int
    record_expires_ms: int | None  # None while pending: only sweep/settle/release end it
    scopes: list[tuple[str, int, int]] = field(default_factory=list)  # scope, amount, ttl_ms


def ttl_ms(ttl_s: float) -> int:
    """A bucket's time to live in whole ms; 0: it never expires."""
    return math.ceil(ttl_s * 1000) if ttl_s > 0 else 0


class HoldBook:
    def __init__(self, max_finished: int = MAX_FINISHED) -> None:
        self._buckets: dict[str, _Bucket] = {}
        self._holds: dict[str, _Hold] = {}  # pending, and expired until settled or released
        # Settled or released: hold id -> (state, record expiry), oldest first. Ordered
        # because the oldest is dropped on every finish once full: a plain dict would scan
        # the slots its earlier deletions left at its front each time.
        self._finished: OrderedDict[str, tuple[str, int]] = OrderedDict()
        self._max_finished = max_finished
        self._expiries: list[tuple[int, str]] = []

    def _bucket(self, scope: str, now_ms: int) -> _Bucket | None:
        bucket = self._buckets.get(scope)
        if bucket is not None and bucket.expires_ms is not None and bucket.expires_ms <= now_ms:
            del self._buckets[scope]
            return None
        return bucket

    def _touch(self, scope: str, ttl_ms: int, now_ms: int) -> _Bucket:
        bucket = self._bucket(scope, now_ms)
        if bucket is None:
            bucket = self._buckets[scope] = _Bucket()
        if ttl_ms > 0 and (bucket.expires_ms is None or bucket.expires_ms < now_ms + ttl_ms):
            bucket.expires_ms = now_ms + ttl_ms
        return bucket

    def _record(self, hold_id: str, now_ms: int) -> _Hold | None:
        hold = self._holds.get(hold_id)
        if hold is not None and hold.record_expires_ms and hold.record_expires_ms <= now_ms:
            del self._holds[hold_id]
            return None
        return hold

    def _finished_state(self, hold_id: str, now_ms: int) -> str | None:
        entry = self._finished.get(hold_id)
        if entry is None:
            return None
        if entry[1] <= now_ms:
            del self._finished[hold_id]
            return None
        return entry[0]

    def totals(self, scope: str, now_ms: int) -> tuple[int, int]:
        bucket = self._bucket(scope, now_ms)
        return (bucket.spent, bucket.held) if bucket else (0, 0)

    def reserve(
        self, specs: Sequence[ReserveSpec], hold_id: str, hold_ttl_ms: int, now_ms: int
    ) -> ReserveResult:
        if self._expiries and self._expiries[0][0] <= now_ms:
            self.sweep(now_ms)
        scopes = [spec.scope for spec in specs]  # a property: made once per spec here
        spent: dict[str, int] = {}
        held: dict[str, int] = {}
        for scope in scopes:
            bucket = self._bucket(scope, now_ms)
            spent[scope], held[scope] = (bucket.spent, bucket.held) if bucket else (0, 0)
        if hold_id in self._holds or hold_id in self._finished:  # a fresh id skips both
            existing = self._record(hold_id, now_ms)
            if existing is not None:
                if existing.state != "pending":
                    raise HoldReused(f"hold {hold_id!r} is already {existing.state}")
                return ReserveResult(True, None, spent, held)
            done = self._finished_state(hold_id, now_ms)
            if done is not None:
                raise HoldReused(f"hold {hold_id!r} is already {done}")
        wanted: dict[str, int] = {}
        for scope, spec in zip(scopes, specs, strict=True):
            wanted[scope] = want = wanted.get(scope, 0) + spec.amount_nanos
            limit = spec.limit_nanos
            if limit is not None and spent[scope] + held[scope] + want > limit:
                return ReserveResult(False, scope, spent, held)
        taken = [
            (scope, spec.amount_nanos, ttl_ms(spec.ttl_s))
            for scope, spec in zip(scopes, specs, strict=True)
        ]
        self._take(hold_id, taken, hold_ttl_ms, now_ms)
        return ReserveResult(True, None, spent, held)

    def hold_plan(
        self,
        hold_id: str,
        scopes: Sequence[tuple[str, int | None, int]],
        amounts: Sequence[int],
        hold_ttl_ms: int,
        now_ms: int,
    ) -> bool | None:
        """`reserve` for the common case, without its spec and result objects: `scopes`
        as (scope, limit or None, bucket ttl ms), distinct, each holding its amount. True
        when held, False when a limit has no room (nothing held); None when the hold id is
        not a fresh one, which `reserve` must judge."""
        if self._expiries and self._expiries[0][0] <= now_ms:
            self.sweep(now_ms)
        if hold_id in self._holds or hold_id in self._finished:
            return None
        for (scope, limit, _), amount in zip(scopes, amounts, strict=True):
            if limit is not None:
                bucket = self._bucket(scope, now_ms)
                if bucket is not None:
                    if bucket.spent + bucket.held + amount > limit:
                        return False
                elif amount > limit:
                    return False
        taken = [
            (scope, amount, ttl) for (scope, _, ttl), amount in zip(scopes, amounts, strict=True)
        ]
        self._take(hold_id, taken, hold_ttl_ms, now_ms)
        return True

    def _take(
        self, hold_id: str, taken: list[tuple[str, int, int]], hold_ttl_ms: int, now_ms: int
    ) -> None:
        """Hold each (scope, amount, bucket ttl ms) under `hold_id`, found to have room."""
        for scope, amount, ttl in taken:
            self._touch(scope, ttl, now_ms).held += amount
        hold = _Hold("pending", now_ms + hold_ttl_ms, None, taken)
        self._holds[hold_id] = hold
        if len(self._expiries) > 2 * len(self._holds) + 64:
            self._compact_expiries()
        heapq.heappush(self._expiries, (hold.expires_ms, hold_id))

    def settle_plan(self, hold_id: str, amounts: Sequence[int], now_ms: int) -> list[int] | None:
        """`settle` of a pending hold made by `hold_plan`, `amounts` in its scopes' order:
        each scope's spent after it. None when the hold is not pending (finished, expired or
        unknown), which `settle` must judge."""
        hold = self._holds.get(hold_id)
        if hold is None or hold.state != "pending":
            return None
        spent = []
        for (scope, held, ttl), amount in zip(hold.scopes, amounts, strict=True):
            bucket = self._touch(scope, ttl, now_ms)
            left = bucket.held - held
            bucket.held = left if left > 0 else 0
            bucket.spent += amount
            spent.append(bucket.spent)
        self._finish(hold_id, hold, "settled", now_ms)
        return spent

    def _compact_expiries(self) -> None:
        """Drop heap entries of holds no longer pending (amortised: it runs when they are
        more than half the heap)."""
        self._expiries = [
            (h.expires_ms, hold_id) for hold_id, h in self._holds.items() if h.state == "pending"
        ]
        heapq.heapify(self._expiries)

    def _finish(self, hold_id: str, hold: _Hold, state: str, now_ms: int) -> None:
        if state == "expired":  # still settleable: keep the whole record
            hold.state = state
            hold.record_expires_ms = now_ms + RECORD_GRACE_MS
            return
        self._holds.pop(hold_id, None)
        finished = self._finished
        finished[hold_id] = (state, now_ms + RECORD_GRACE_MS)
        # Bounded here; the records past their grace go in `purge` (the periodic sweep),
        # and a lookup never reads one as live (`_finished_state`).
        while len(finished) > self._max_finished:
            finished.popitem(last=False)

    def _drop_expired_finished(self, now_ms: int) -> None:
        finished = self._finished  # oldest first: stop at the first one still kept
        while finished:
            oldest, (_, expires_ms) = next(iter(finished.items()))
            if expires_ms > now_ms:
                return
            del finished[oldest]

    def _unhold(self, hold: _Hold, now_ms: int) -> None:
        for scope, amount, ttl in hold.scopes:
            bucket = self._touch(scope, ttl, now_ms)
            bucket.held = max(0, bucket.held - amount)

    def settle(self, hold_id: str, actual: int | Mapping[str, int], now_ms: int) -> dict[str, int]:
        hold = self._record(hold_id, now_ms)
        if hold is None or hold.state not in ("pending", "expired"):
            return {}
        amounts = settle_amounts([s for s, _, _ in hold.scopes], actual)
        pending = hold.state == "pending"
        result: dict[str, int] = {}
        # One pass: drop the hold's part and add the spend per scope (a scope named twice
        # adds its amount once, at its first entry).
        for scope, amount, ttl in hold.scopes:
            bucket = self._touch(scope, ttl, now_ms)
            if pending:
                held = bucket.held - amount
                bucket.held = held if held > 0 else 0
            bucket.spent += amounts.pop(scope, 0)
            result[scope] = bucket.spent
        self._finish(hold_id, hold, "settled", now_ms)
        return result

    def release(self, hold_id: str, now_ms: int) -> None:
        hold = self._record(hold_id, now_ms)
        if hold is None or hold.state not in ("pending", "expired"):
            return
        if hold.state == "pending":
            self._unhold(hold, now_ms)
        self._finish(hold_id, hold, "released", now_ms)

    def sweep(self, now_ms: int) -> int:
        count = 0
        while self._expiries and self._expiries[0][0] <= now_ms:
            expires_ms, hold_id = heapq.heappop(self._expiries)
            hold = self._holds.get(hold_id)
            if hold is not None and hold.state == "pending" and hold.expires_ms == expires_ms:
                self._unhold(hold, now_ms)
                self._finish(hold_id, hold, "expired", now_ms)
                count += 1
        return count

    def purge(self, now_ms: int) -> None:
        """Forget expired buckets and hold records (memory hygiene, not correctness)."""
        for scope in [
            s for s, b in self._buckets.items() if b.expires_ms and b.expires_ms <= now_ms
        ]:
            del self._buckets[scope]
        done = [
            h
            for h, r in self._holds.items()
            if r.record_expires_ms and r.record_expires_ms <= now_ms
        ]
        for hold_id in done:
            del self._holds[hold_id]
        self._drop_expired_finished(now_ms)
