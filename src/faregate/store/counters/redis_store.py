"""RedisCounterStore: the distributed CounterStore, every operation one Lua script or one
command, so replicas share one consistent state. Connection failures become
CounterStoreUnavailable here and nowhere else."""

# With `now=None` time comes from the Redis server, so replica clock skew does not matter.
# Give the client a BlockingConnectionPool: a plain pool fails callers past max_connections.

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import redis.asyncio as aioredis
from redis import exceptions as redis_errors

from faregate.store.counters import lua
from faregate.store.counters.base import (
    HOLD_RECORD_GRACE_S,
    NEVER,
    Admission,
    CounterStoreUnavailable,
    HoldReused,
    LeaseSpec,
    LimitResult,
    LimitSpec,
    ReserveResult,
    ReserveSpec,
    ms,
    settle_amounts,
)

_GRACE_MS = str(HOLD_RECORD_GRACE_S * 1000)
_SWEEP_BATCH = 500


_DOWN = (redis_errors.ConnectionError, redis_errors.TimeoutError)


def _unavailable() -> CounterStoreUnavailable:
    return CounterStoreUnavailable("the shared counter store is unavailable")


@contextmanager
def _translated() -> Iterator[None]:
    try:
        yield
    except _DOWN as exc:
        raise _unavailable() from exc


def _now_arg(now: float | None) -> str:
    value = ms(now)
    return "" if value is None else str(value)


def _ttl_ms(ttl_s: float | None) -> int:
    return 0 if not ttl_s or ttl_s <= 0 else math.ceil(ttl_s * 1000)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class RedisCounterStore:
    def __init__(self, client: aioredis.Redis, prefix: str = "fg:") -> None:
        if client.connection_pool.connection_kwargs.get("decode_responses"):
            raise ValueError("RedisCounterStore needs a client with decode_responses=False")
        self._redis = client
        self._prefix = prefix
        self._admit = client.register_script(lua.ADMIT)
        self._in_flight = client.register_script(lua.IN_FLIGHT)
        self._reserve = client.register_script(lua.RESERVE)
        self._settle = client.register_script(lua.SETTLE)
        self._release = client.register_script(lua.RELEASE)
        self._sweep = client.register_script(lua.SWEEP)
        self._spent_many = client.register_script(lua.SPENT_MANY)
        self._incr = client.register_script(lua.INCR)

    async def _run(
        self, script: Callable[..., Awaitable[Any]], keys: Sequence[str], args: Sequence[Any]
    ) -> Any:
        try:  # `_translated`, spelled out: a generator context per call showed in profiles
            return await script(keys=keys, args=args)
        except _DOWN as exc:
            raise _unavailable() from exc

    def _k(self, space: str, key: str) -> str:
        return f"{self._prefix}{space}:{key}"

    # -- rate limits -------------------------------------------------------------------

    def _rate_args(
        self,
        specs: Sequence[LimitSpec],
        now: float | None,
        mode: str,
        leases: Sequence[LeaseSpec] = (),
    ) -> list[Any]:
        args: list[Any] = [_now_arg(now), mode, len(leases)]
        for spec in specs:
            args += [spec.limit, spec.window_ms, spec.cost]
        for lease in leases:
            args += [lease.limit, lease.lease_id, max(1, _ttl_ms(lease.ttl_s))]
        return args

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
        if not specs and not leases:
            return Admission((), ())
        for spec in specs:
            spec.validate()
        for lease in leases:
            lease.validate()
        keys = [self._k("rl", s.key) for s in specs] + [self._k("cc", x.key) for x in leases]
        args = self._rate_args(specs, now, "check", leases)
        raw = [int(x) for x in await self._run(self._admit, keys, args)]
        results = []
        for i, spec in enumerate(specs):
            allowed, remaining, reset_ms, retry_ms = raw[4 * i : 4 * i + 4]
            retry = NEVER if retry_ms < 0 else retry_ms / 1000
            results.append(
                LimitResult(bool(allowed), spec.limit, remaining, reset_ms / 1000, retry)
            )
        fits = tuple(bool(x) for x in raw[4 * len(specs) :])
        return Admission(tuple(results), fits)

    async def rate_limit_adjust(self, specs: Sequence[LimitSpec], now: float | None = None) -> None:
        if not specs:
            return
        for spec in specs:
            spec.validate(allow_negative=True)
        keys = [self._k("rl", s.key) for s in specs]
        await self._run(self._admit, keys, self._rate_args(specs, now, "adjust"))

    async def end_admission(
        self,
        leases: Sequence[tuple[str, str]],
        specs: Sequence[LimitSpec],
        now: float | None = None,
    ) -> None:
        # One script call instead of a ZREM per lease and a script for the true-up.
        if not leases:
            await self.rate_limit_adjust(specs, now)
            return
        for spec in specs:
            spec.validate(allow_negative=True)
        keys = [self._k("rl", s.key) for s in specs] + [self._k("cc", k) for k, _ in leases]
        args = self._rate_args(specs, now, "adjust")
        args[2] = len(leases)
        for _, lease_id in leases:
            args += [0, lease_id, 0]
        await self._run(self._admit, keys, args)

    # -- concurrency -------------------------------------------------------------------

    async def acquire_concurrency(
        self, key: str, limit: int, lease_id: str, ttl_s: float, now: float | None = None
    ) -> bool:
        return (await self.admit((), [LeaseSpec(key, limit, lease_id, ttl_s)], now)).allowed

    async def release_concurrency(self, key: str, lease_id: str) -> None:
        with _translated():
            await self._redis.zrem(self._k("cc", key), lease_id)

    async def in_flight(self, key: str, now: float | None = None) -> int:
        return int(await self._run(self._in_flight, [self._k("cc", key)], [_now_arg(now)]))

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
        keys = [self._k("b", s.scope) for s in scopes]
        keys += [self._k("hold", hold_id), f"{self._prefix}holds"]
        args: list[Any] = [self._prefix, hold_id, _ttl_ms(hold_ttl_s), _now_arg(now), _GRACE_MS]
        for spec in scopes:
            limit = "" if spec.limit_nanos is None else spec.limit_nanos
            args += [spec.scope, spec.amount_nanos, limit, _ttl_ms(spec.ttl_s)]
        raw = [_text(x) for x in await self._run(self._reserve, keys, args)]
        if raw[0] == "used":
            raise HoldReused(f"hold {hold_id!r} is already {raw[1]}")
        spent, held = {}, {}
        for i, spec in enumerate(scopes):
            spent[spec.scope] = int(raw[2 + 2 * i])
            held[spec.scope] = int(raw[3 + 2 * i])
        return ReserveResult(raw[0] == "ok", raw[1] or None, spent, held)

    async def settle(self, hold_id: str, actual: int | Mapping[str, int]) -> dict[str, int]:
        keys = [self._k("hold", hold_id), f"{self._prefix}holds"]
        args: list[Any] = [self._prefix, hold_id, _GRACE_MS]
        if isinstance(actual, int):
            settle_amounts([], actual)  # validates the sign
            args += ["all", actual]
        else:
            args += ["map", 0]
            for scope, amount in settle_amounts(list(actual), actual).items():
                args += [scope, amount]
        raw = [_text(x) for x in await self._run(self._settle, keys, args)]
        return {raw[i]: int(raw[i + 1]) for i in range(0, len(raw), 2)}

    async def release(self, hold_id: str) -> None:
        keys = [self._k("hold", hold_id), f"{self._prefix}holds"]
        await self._run(self._release, keys, [self._prefix, hold_id, _GRACE_MS])

    async def sweep_expired(self, now: float | None = None) -> int:
        total = 0
        while True:
            args = [self._prefix, _now_arg(now), _SWEEP_BATCH, _GRACE_MS]
            count = int(await self._run(self._sweep, [f"{self._prefix}holds"], args))
            total += count
            if count < _SWEEP_BATCH:
                return total

    async def _totals(self, key: str) -> tuple[int, int]:
        with _translated():
            spent, held = await self._redis.hmget(self._k("b", key), ["spent", "held"])
        return int(spent or 0), int(held or 0)

    async def spent(self, key: str) -> int:
        return (await self._totals(key))[0]

    async def held(self, key: str) -> int:
        return (await self._totals(key))[1]

    async def spent_many(self, keys: Sequence[str]) -> list[int]:
        if not keys:
            return []
        raw = await self._run(self._spent_many, [self._k("b", k) for k in keys], [])
        return [int(x) for x in raw]

    # -- plain counters and bytes ------------------------------------------------------

    async def incr(self, key: str, amount: int = 1, ttl_s: float | None = None) -> int:
        return int(await self._run(self._incr, [self._k("n", key)], [amount, _ttl_ms(ttl_s)]))

    async def get(self, key: str) -> int:
        with _translated():
            value = await self._redis.get(self._k("n", key))
        return int(value or 0)

    async def get_bytes(self, key: str) -> bytes | None:
        with _translated():
            value = await self._redis.get(self._k("c", key))
        return value if value is None or isinstance(value, bytes) else value.encode()

    async def set_bytes(self, key: str, value: bytes, ttl_s: float | None = None) -> None:
        ttl = _ttl_ms(ttl_s)
        with _translated():
            await self._redis.set(self._k("c", key), value, px=ttl or None)

    async def delete(self, key: str) -> None:
        with _translated():
            await self._redis.delete(self._k("c", key), self._k("n", key))
