"""Breaker state shared by every replica through Redis: one Lua script merges a replica's
reports and returns the agreed state, so one process opening a breaker stops the others.
Called by HealthRegistry's background exchange (~4/s), never per request."""

from __future__ import annotations

import math
import uuid
from collections.abc import Sequence

from redis.asyncio import Redis

from faregate.routing.breaker import BreakerPolicy
from faregate.routing.shared import HealthReport, SharedView

# KEYS: per deployment a state hash and a window hash (fields t<second>, f<second>).
# ARGV: replica, threshold, window s, min requests, ratio, cooldown ms, lease ms, ttl ms,
# then per deployment: successes, failures, trailing, opened ms, cooldown ms, probe, wants.
_EXCHANGE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local sec = math.floor(now / 1000)
local replica, threshold, span = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local min_req, ratio, cooldown = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local lease, ttl = tonumber(ARGV[7]), tonumber(ARGV[8])
local out = {}
for i = 1, #KEYS / 2 do
  local hk, wk = KEYS[2 * i - 1], KEYS[2 * i]
  local a = 8 + (i - 1) * 7
  local succ, fail, trail = tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3])
  local opened, cool, probe = tonumber(ARGV[a + 4]), tonumber(ARGV[a + 5]), tonumber(ARGV[a + 6])
  local wants = ARGV[a + 7] == '1'
  local h = redis.call('HMGET', hk, 'state', 'open_until', 'cool_until', 'owner', 'probe_until', 'consec')
  local state, owner = h[1] or 'closed', h[4] or ''
  local open_until, cool_until = tonumber(h[2]) or 0, tonumber(h[3]) or 0
  local probe_until, consec = tonumber(h[5]) or 0, tonumber(h[6]) or 0
  if cool > 0 and now + cool > cool_until then cool_until = now + cool end
  if succ > 0 then consec = trail else consec = consec + trail end
  if succ + fail > 0 then
    redis.call('HINCRBY', wk, 't' .. sec, succ + fail)
    if fail > 0 then redis.call('HINCRBY', wk, 'f' .. sec, fail) end
  end
  local total, fails = 0, 0
  local fields = redis.call('HGETALL', wk)
  for j = 1, #fields, 2 do
    if tonumber(string.sub(fields[j], 2)) <= sec - span then
      redis.call('HDEL', wk, fields[j])
    elseif string.sub(fields[j], 1, 1) == 't' then
      total = total + tonumber(fields[j + 1])
    else
      fails = fails + tonumber(fields[j + 1])
    end
  end
  local function reset(new_state, ms)
    state, open_until, owner, consec, total, fails = new_state, now + ms, '', 0, 0, 0
    redis.call('DEL', wk)
  end
  if probe == 1 and state ~= 'closed' then reset('closed', 0)
  elseif probe == 2 then reset('open', cooldown)
  elseif probe == 3 and owner == replica then owner = '' end
  if opened > 0 and state == 'closed' then reset('open', opened) end
  if state == 'closed' and (consec >= threshold or (total >= min_req and fails >= ratio * total)) then
    reset('open', cooldown)
  end
  if state == 'open' and now >= open_until then state, owner = 'half_open', '' end
  if state == 'half_open' and wants and (owner == '' or now >= probe_until) then
    owner, probe_until = replica, now + lease
  end
  redis.call('HSET', hk, 'state', state, 'open_until', open_until, 'cool_until', cool_until,
    'owner', owner, 'probe_until', probe_until, 'consec', consec)
  redis.call('PEXPIRE', hk, math.max(ttl, open_until - now + ttl, cool_until - now + ttl))
  redis.call('PEXPIRE', wk, ttl)
  local open_left = 0
  if state == 'open' then open_left = open_until - now end
  local mine = 0
  if state == 'half_open' and owner == replica then mine = 1 end
  out[i] = {state, open_left, math.max(0, cool_until - now), mine, consec, total, fails}
end
return out
"""


def _ms(seconds: float) -> int:
    return math.ceil(seconds * 1000)


class RedisSharedHealth:
    """SharedHealth on Redis. Durations come back relative to Redis's clock, so replicas
    need no synchronised clocks. Keys share one hash tag (one cluster slot) and expire."""

    def __init__(self, client: Redis, prefix: str = "faregate:", *, replica_id: str | None = None):
        self._client = client
        self._prefix = f"{prefix}{{health}}:"
        self.replica_id = replica_id or uuid.uuid4().hex
        self._script = client.register_script(_EXCHANGE)

    async def exchange(
        self, reports: Sequence[HealthReport], policy: BreakerPolicy
    ) -> dict[str, SharedView]:
        if not reports:
            return {}
        keys: list[str] = []
        ttl = max(policy.window_seconds, policy.cooldown_seconds, policy.probe_timeout) * 2 + 60
        args: list[str | int | float] = [
            self.replica_id,
            policy.failure_threshold,
            math.ceil(policy.window_seconds),
            policy.min_requests,
            repr(policy.error_ratio),
            _ms(policy.cooldown_seconds),
            _ms(policy.probe_timeout),
            _ms(ttl),
        ]
        for r in reports:
            keys += [
                f"{self._prefix}state:{r.deployment_id}",
                f"{self._prefix}window:{r.deployment_id}",
            ]
            args += [
                r.successes,
                r.failures,
                r.trailing_failures,
                _ms(r.opened_for),
                _ms(r.cooldown_for),
                r.probe,
                int(r.wants_probe),
            ]
        rows = await self._script(keys=keys, args=args)
        return {r.deployment_id: _view(row) for r, row in zip(reports, rows, strict=True)}


def _view(row: list[bytes | int]) -> SharedView:
    state, open_ms, cool_ms, mine, consec, total, fails = row
    return SharedView(
        state=state.decode() if isinstance(state, bytes) else str(state),
        open_for=int(open_ms) / 1000,
        cooldown_for=int(cool_ms) / 1000,
        probe_mine=bool(mine),
        consecutive_failures=int(consec),
        window_requests=int(total),
        window_failures=int(fails),
    )
