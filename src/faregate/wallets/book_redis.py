"""RedisHoldBook: the hold book shared by replicas through Redis, one Lua script per step.

Keys (under the configured prefix): `w:<wallet>` hash funded/ver/consumed/held, `wh:<hold>`
hash wallet/amount for a pending hold, and the zset `wholds` of pending holds by expiry (ms,
server clock). Amounts are int64 strings updated with HINCRBY and compared in two base-1e9
limbs, so nanos stay exact. On Redis Cluster the prefix must carry one hash tag."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import redis.asyncio as aioredis
from redis import exceptions as redis_errors

from faregate.store.counters.base import CounterStoreUnavailable
from faregate.store.counters.lua import _LIMBS
from faregate.wallets.book import Expired, Snapshot

_NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""

# KEYS: account. ARGV: funded, version, consumed.
_LOAD = """
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('HSET', KEYS[1], 'funded', ARGV[1], 'ver', ARGV[2], 'consumed', ARGV[3], 'held', '0')
end
return 1
"""

# KEYS: account. ARGV: funded, version.
_FUND = """
local ver = redis.call('HGET', KEYS[1], 'ver')
if ver and tonumber(ARGV[2]) > tonumber(ver) then
  redis.call('HSET', KEYS[1], 'funded', ARGV[1], 'ver', ARGV[2])
end
return 1
"""

# KEYS: account, hold record, index. ARGV: amount, extra, ttl_ms, hold_id, wallet_id.
# Returns 1 held, 0 not covered, -1 unknown wallet (load it first).
_HOLD = (
    _NOW
    + _LIMBS
    + """
local function non_negative(s) return string.sub(s, 1, 1) ~= '-' end
local v = redis.call('HMGET', KEYS[1], 'funded', 'consumed', 'held')
if not v[1] then return -1 end
if redis.call('EXISTS', KEYS[2]) == 1 then return 1 end
local left = add(parse(v[3]), parse(ARGV[1]))
local right = add(parse(v[1]), parse(ARGV[2]))
if non_negative(v[2]) then left = add(left, parse(v[2]))
else right = add(right, parse(string.sub(v[2], 2))) end
if gt(left, right) then return 0 end
redis.call('HINCRBY', KEYS[1], 'held', ARGV[1])
redis.call('HSET', KEYS[2], 'wallet', ARGV[5], 'amount', ARGV[1])
redis.call('ZADD', KEYS[3], now + tonumber(ARGV[3]), ARGV[4])
return 1
"""
)

# KEYS: account, hold record, index. ARGV: hold_id, actual ('' to release).
_FINISH = """
local amount = redis.call('HGET', KEYS[2], 'amount')
if not amount then return 0 end
redis.call('HINCRBY', KEYS[1], 'held', '-' .. amount)
if ARGV[2] ~= '' then redis.call('HINCRBY', KEYS[1], 'consumed', ARGV[2]) end
redis.call('DEL', KEYS[2])
redis.call('ZREM', KEYS[3], ARGV[1])
return redis.call('HMGET', KEYS[1], 'funded', 'ver', 'consumed', 'held')
"""

# KEYS: index. ARGV: prefix, batch. Returns wallet, hold, amount triples.
_SWEEP = (
    _NOW
    + """
local out = {}
for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[2]))) do
  local rec = ARGV[1] .. 'wh:' .. id
  local v = redis.call('HMGET', rec, 'wallet', 'amount')
  if v[1] then
    redis.call('HINCRBY', ARGV[1] .. 'w:' .. v[1], 'held', '-' .. v[2])
    redis.call('DEL', rec)
    out[#out+1] = v[1]; out[#out+1] = id; out[#out+1] = v[2]
  end
  redis.call('ZREM', KEYS[1], id)
end
return out
"""
)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class RedisHoldBook:
    durable = False

    def __init__(self, client: aioredis.Redis, prefix: str = "fg:") -> None:
        self._redis = client
        self._prefix = prefix
        self._load = client.register_script(_LOAD)
        self._fund = client.register_script(_FUND)
        self._hold = client.register_script(_HOLD)
        self._finish = client.register_script(_FINISH)
        self._sweep = client.register_script(_SWEEP)
        self._known: set[str] = set()

    def _account(self, wallet_id: str) -> str:
        return f"{self._prefix}w:{wallet_id}"

    def _keys(self, wallet_id: str, hold_id: str) -> list[str]:
        return [self._account(wallet_id), f"{self._prefix}wh:{hold_id}", f"{self._prefix}wholds"]

    async def _run(self, script: Any, keys: list[str], args: list[Any]) -> Any:
        try:
            return await script(keys=keys, args=args)
        except (redis_errors.ConnectionError, redis_errors.TimeoutError) as exc:
            raise CounterStoreUnavailable("the shared counter store is unavailable") from exc

    async def knows(self, wallet_id: str) -> bool:
        return wallet_id in self._known

    async def load(self, wallet_id: str, snapshot: Snapshot) -> None:
        args = [snapshot.funded, snapshot.version, snapshot.consumed]
        await self._run(self._load, [self._account(wallet_id)], args)
        self._known.add(wallet_id)

    async def set_funded(self, wallet_id: str, funded: int, version: int) -> None:
        await self._run(self._fund, [self._account(wallet_id)], [funded, version])

    async def hold(
        self, wallet_id: str, hold_id: str, amount: int, ttl_s: float, extra: int = 0
    ) -> bool:
        args = [amount, extra, max(1, round(ttl_s * 1000)), hold_id, wallet_id]
        result = int(await self._run(self._hold, self._keys(wallet_id, hold_id), args))
        if result < 0:  # Redis lost the account (restart, eviction): reload from the ledger
            self._known.discard(wallet_id)
            raise KeyError(wallet_id)
        return result == 1

    async def finish(
        self,
        wallet_id: str,
        hold_id: str,
        held: int,
        actual: int | None,
        at: datetime | None = None,
        subscription_id: str | None = None,
    ) -> Snapshot | None:
        args = [hold_id, "" if actual is None else actual]
        raw = await self._run(self._finish, self._keys(wallet_id, hold_id), args)
        if not raw or raw == 0:
            return None
        funded, ver, consumed, held_now = (int(_text(v or 0)) for v in raw)
        return Snapshot(funded, ver, consumed, held_now)

    async def sweep_expired(self, now: float | None = None) -> list[Expired]:
        raw = await self._run(self._sweep, [f"{self._prefix}wholds"], [self._prefix, 500])
        items = [_text(x) for x in raw]
        return [Expired(items[i], items[i + 1], int(items[i + 2])) for i in range(0, len(items), 3)]

    async def snapshot(self, wallet_id: str) -> Snapshot | None:
        try:
            values = await self._redis.hmget(
                self._account(wallet_id), ["funded", "ver", "consumed", "held"]
            )
        except (redis_errors.ConnectionError, redis_errors.TimeoutError) as exc:
            raise CounterStoreUnavailable("the shared counter store is unavailable") from exc
        if values[0] is None:
            return None
        funded, ver, consumed, held = (int(_text(v)) for v in values)
        return Snapshot(funded, ver, consumed, held)
