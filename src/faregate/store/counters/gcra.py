"""GCRA (generic cell rate algorithm) in exact integers, shared by the memory backend and
mirrored line for line by the Redis Lua script. Pure functions: no clock, no storage."""

# State is (t_ms, debt). Each unit of cost adds `window_ms` of debt; debt drains at `limit`
# per millisecond; a request fits while debt <= limit * window_ms. So a full bucket allows a
# burst of `limit`, refills continuously, and is full again after debt / limit ms. This is the
# theoretical-arrival-time form of GCRA scaled by `limit`, which keeps every value an integer.

from __future__ import annotations

from typing import NamedTuple

MAX_DEBT = 2**52


class Decision(NamedTuple):  # a NamedTuple: made for every rate limit of every request
    allowed: bool
    debt: int  # debt after this decision (unchanged when refused)
    remaining: int
    reset_ms: int
    retry_ms: int  # -1: the cost can never fit


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def drain(t_ms: int, debt: int, now_ms: int, limit: int) -> tuple[int, int]:
    """Debt as of `now_ms`. A clock behind the stored time drains nothing."""
    if now_ms <= t_ms:
        return t_ms, debt
    debt -= limit * (now_ms - t_ms)
    return now_ms, debt if debt > 0 else 0


def decide(debt: int, limit: int, window_ms: int, cost: int) -> Decision:
    capacity = limit * window_ms
    need = debt + cost * window_ms
    if need <= capacity:
        return Decision(True, need, *admitted(need, limit, window_ms), 0)
    retry = -1 if cost > limit else _ceil_div(need - capacity, limit)
    remaining = (capacity - debt) // window_ms if capacity > debt else 0
    return Decision(False, debt, remaining, _ceil_div(debt, limit), retry)


def admitted(debt: int, limit: int, window_ms: int) -> tuple[int, int]:
    """(remaining, reset_ms) once a request brought the debt to `debt`."""
    return (limit * window_ms - debt) // window_ms, _ceil_div(debt, limit)


def adjust(debt: int, window_ms: int, cost: int) -> int:
    """Apply a true-up: positive cost is consumed even past the limit, negative refunds."""
    debt += cost * window_ms
    return 0 if debt < 0 else MAX_DEBT if debt > MAX_DEBT else debt


def ttl_ms(debt: int, limit: int) -> int:
    """How long the state matters: once drained it equals an absent key."""
    return _ceil_div(debt, limit) + 1
