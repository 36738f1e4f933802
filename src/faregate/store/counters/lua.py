"""Lua scripts behind RedisCounterStore: each public operation is one script, hence one
atomic step on the server. Rate limits mirror gcra.py; holds mirror memory_holds.py."""

# Amounts stay decimal strings end to end (Lua numbers are doubles): comparisons use two
# base-1e9 limbs and updates use HINCRBY, so nanos are exact to int64. Hold scripts touch the
# keys a hold record names, so on Redis Cluster the prefix must carry one hash tag ("{fg}:").

from __future__ import annotations

_COMMON = """
local function now_ms(arg)
  if arg ~= nil and arg ~= '' then return tonumber(arg) end
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function fmt(x) return string.format('%.0f', x) end
local function touch(key, ttl)
  ttl = tonumber(ttl)
  if ttl and ttl > 0 then
    local p = redis.call('PTTL', key)
    if p < ttl then redis.call('PEXPIRE', key, ttl) end
  end
end
"""

_GCRA = """
local function fdiv(a, b)
  local q = math.floor(a / b)
  if q * b > a then q = q - 1 elseif (q + 1) * b <= a then q = q + 1 end
  return q
end
local function cdiv(a, b) return -fdiv(-a, b) end
local state = {}
local function load(key, limit, now)
  local s = state[key]
  if s then return s end
  local v = redis.call('HMGET', key, 't', 'd')
  local t, d = tonumber(v[1]), tonumber(v[2])
  if t == nil or d == nil then t, d = now, 0 end
  if now > t then d = math.max(0, d - limit * (now - t)); t = now end
  s = {t, d, limit}
  state[key] = s
  return s
end
local function decide(d, limit, window, cost)
  local cap = limit * window
  local need = d + cost * window
  if need <= cap then return 1, need, fdiv(cap - need, window), cdiv(need, limit), 0 end
  local retry = -1
  if cost <= limit then retry = cdiv(need - cap, limit) end
  return 0, d, fdiv(math.max(0, cap - d), window), cdiv(d, limit), retry
end
local function save()
  for key, s in pairs(state) do
    if s[2] > 0 then
      redis.call('HSET', key, 't', fmt(s[1]), 'd', fmt(s[2]))
      redis.call('PEXPIRE', key, cdiv(s[2], s[3]) + 1)
    else
      redis.call('DEL', key)
    end
  end
end
"""

# KEYS: rate keys, then lease zsets. ARGV: now, mode (check|adjust), number of leases, then
# limit, window_ms, cost per rate key, then limit, lease_id, ttl_ms per lease. Mirrors
# MemoryCounterStore.admit: every rate spec and lease is judged, then all are taken or none.
# In adjust mode (end_admission, rate_limit_adjust) the leases are released and every cost
# applied unconditionally.
_ADMIT_BODY = """
local now = now_ms(ARGV[1])
local nl = tonumber(ARGV[3])
local n = #KEYS - nl
local function spec(i) return tonumber(ARGV[3*i+1]), tonumber(ARGV[3*i+2]), tonumber(ARGV[3*i+3]) end
local function lease(j)
  local b = 3 + 3*n + 3*(j-1)
  return tonumber(ARGV[b+1]), ARGV[b+2], tonumber(ARGV[b+3])
end
if ARGV[2] == 'adjust' then
  for j = 1, nl do redis.call('ZREM', KEYS[n + j], (select(2, lease(j)))) end
  for i = 1, n do
    local limit, window, cost = spec(i)
    local s = load(KEYS[i], limit, now)
    s[2] = math.min(4503599627370496, math.max(0, s[2] + cost * window))
  end
  save()
  return 0
end
local taken, fits, free = {}, {}, true
for j = 1, nl do
  local key = KEYS[n + j]
  local limit, id = lease(j)
  local t = taken[key]
  if not t then
    redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
    t = {count = redis.call('ZCARD', key), ids = {}}
    taken[key] = t
  end
  local held = t.ids[id] or redis.call('ZSCORE', key, id)
  local ok = held or t.count < limit
  if ok then
    if not held then t.count = t.count + 1 end
    t.ids[id] = true
    fits[j] = 1
  else
    free = false
    fits[j] = 0
  end
end
local out, all = {}, free
for i = 1, n do
  local limit, window, cost = spec(i)
  local s = load(KEYS[i], limit, now)
  local ok, d, rem, reset, retry = decide(s[2], limit, window, cost)
  s[2] = d
  if ok == 0 then all = false end
  for _, x in ipairs({ok, rem, reset, retry}) do out[#out+1] = x end
end
if all then
  save()
  for j = 1, nl do
    local _, id, ttl = lease(j)
    redis.call('ZADD', KEYS[n + j], fmt(now + ttl), id)
    touch(KEYS[n + j], ttl)
  end
else
  -- Refused: verdicts stay as judged in order; remaining/reset describe the untouched state.
  state = {}
  for i = 1, n do
    local limit, window, cost = spec(i)
    local _, _, rem, reset = decide(load(KEYS[i], limit, now)[2], limit, window, 0)
    out[4*i - 2], out[4*i - 1] = rem, reset
  end
end
for j = 1, nl do out[4*n + j] = fits[j] end
return out
"""
ADMIT = _COMMON + _GCRA + _ADMIT_BODY

# KEYS[1]: lease zset. ARGV: now.
_IN_FLIGHT_BODY = """
return redis.call('ZCOUNT', KEYS[1], '(' .. fmt(now_ms(ARGV[1])), '+inf')
"""
IN_FLIGHT = _COMMON + _IN_FLIGHT_BODY

_HOLDS_BODY = """
local function unhold(prefix, scopes)
  for _, s in ipairs(scopes) do
    local key = prefix .. 'b:' .. s[1]
    if s[2] ~= '0' then
      if redis.call('HINCRBY', key, 'held', '-' .. s[2]) < 0 then
        redis.call('HSET', key, 'held', '0')
      end
    end
    touch(key, s[3])
  end
end
local function sweep(prefix, idx, now, max, grace)
  local ids = redis.call('ZRANGEBYSCORE', idx, '-inf', now, 'LIMIT', 0, max)
  for _, id in ipairs(ids) do
    local rec = prefix .. 'hold:' .. id
    local v = redis.call('HMGET', rec, 'state', 'scopes')
    if v[1] == 'pending' then
      unhold(prefix, cjson.decode(v[2]))
      redis.call('HSET', rec, 'state', 'expired')
      redis.call('PEXPIRE', rec, grace)
    end
    redis.call('ZREM', idx, id)
  end
  return #ids
end
"""
_HOLDS = _COMMON + _HOLDS_BODY

_LIMBS = """
local function parse(s)
  if #s <= 9 then return {0, tonumber(s)} end
  return {tonumber(string.sub(s, 1, #s - 9)), tonumber(string.sub(s, -9))}
end
local function add(a, b)
  local lo = a[2] + b[2]
  local carry = math.floor(lo / 1000000000)
  return {a[1] + b[1] + carry, lo - carry * 1000000000}
end
local function gt(a, b) return a[1] > b[1] or (a[1] == b[1] and a[2] > b[2]) end
"""

# KEYS: bucket per scope, then hold record, then hold index.
# ARGV: prefix, hold_id, hold_ttl_ms, now, grace_ms, then scope, amount, limit|'', ttl_ms.
# A pending record never expires by itself: only a sweep, settle or release ends it.
_RESERVE_BODY = """
local n = #KEYS - 2
local prefix, hold_id = ARGV[1], ARGV[2]
local rec, idx = KEYS[n + 1], KEYS[n + 2]
local now = now_ms(ARGV[4])
sweep(prefix, idx, now, 10, ARGV[5])
local out = {'ok', ''}
for i = 1, n do
  local v = redis.call('HMGET', KEYS[i], 'spent', 'held')
  out[#out+1] = v[1] or '0'
  out[#out+1] = v[2] or '0'
end
local state = redis.call('HGET', rec, 'state')
if state then
  if state ~= 'pending' then return {'used', state} end
  return out
end
local wanted = {}
for i = 1, n do
  local b = 2 + 4 * i
  local w = add(wanted[KEYS[i]] or {0, 0}, parse(ARGV[b + 1]))
  wanted[KEYS[i]] = w
  if ARGV[b + 2] ~= '' then
    local total = add(add(parse(out[2*i + 1]), parse(out[2*i + 2])), w)
    if gt(total, parse(ARGV[b + 2])) then
      out[1], out[2] = 'fail', ARGV[b]
      return out
    end
  end
end
local scopes = {}
for i = 1, n do
  local b = 2 + 4 * i
  redis.call('HINCRBY', KEYS[i], 'held', ARGV[b + 1])
  touch(KEYS[i], ARGV[b + 3])
  scopes[#scopes+1] = {ARGV[b], ARGV[b + 1], ARGV[b + 3]}
end
local expires = now + tonumber(ARGV[3])
redis.call('HSET', rec, 'state', 'pending', 'scopes', cjson.encode(scopes))
redis.call('ZADD', idx, fmt(expires), hold_id)
return out
"""
RESERVE = _HOLDS + _LIMBS + _RESERVE_BODY

# KEYS: hold record, hold index. ARGV: prefix, hold_id, grace_ms, mode (all|map), amount,
# then [scope, amount]...
_SETTLE_BODY = """
local prefix, hold_id = ARGV[1], ARGV[2]
local v = redis.call('HMGET', KEYS[1], 'state', 'scopes')
if v[1] ~= 'pending' and v[1] ~= 'expired' then return {} end
local scopes = cjson.decode(v[2])
if v[1] == 'pending' then unhold(prefix, scopes) end
local actual = {}
if ARGV[4] == 'all' then
  for _, s in ipairs(scopes) do actual[s[1]] = ARGV[5] end
else
  for j = 6, #ARGV, 2 do actual[ARGV[j]] = ARGV[j + 1] end
end
local out, done = {}, {}
for _, s in ipairs(scopes) do
  if not done[s[1]] then
    done[s[1]] = true
    local key = prefix .. 'b:' .. s[1]
    redis.call('HINCRBY', key, 'spent', actual[s[1]] or '0')
    touch(key, s[3])
    out[#out+1] = s[1]
    out[#out+1] = redis.call('HGET', key, 'spent')
  end
end
redis.call('HSET', KEYS[1], 'state', 'settled')
redis.call('PEXPIRE', KEYS[1], ARGV[3])
redis.call('ZREM', KEYS[2], hold_id)
return out
"""
SETTLE = _HOLDS + _SETTLE_BODY

# KEYS: hold record, hold index. ARGV: prefix, hold_id, grace_ms.
_RELEASE_BODY = """
local v = redis.call('HMGET', KEYS[1], 'state', 'scopes')
if v[1] == 'pending' then unhold(ARGV[1], cjson.decode(v[2])) end
if v[1] == 'pending' or v[1] == 'expired' then
  redis.call('HSET', KEYS[1], 'state', 'released')
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
  redis.call('ZREM', KEYS[2], ARGV[2])
end
return 0
"""
RELEASE = _HOLDS + _RELEASE_BODY

# KEYS[1]: hold index. ARGV: prefix, now, batch size, grace_ms.
_SWEEP_BODY = """
return sweep(ARGV[1], KEYS[1], now_ms(ARGV[2]), tonumber(ARGV[3]), ARGV[4])
"""
SWEEP = _HOLDS + _SWEEP_BODY

# KEYS: buckets. Returns spent per bucket as strings.
SPENT_MANY = """
local out = {}
for i = 1, #KEYS do out[i] = redis.call('HGET', KEYS[i], 'spent') or '0' end
return out
"""

# KEYS[1]: counter. ARGV: amount, ttl_ms (0: none).
_INCR_BODY = """
redis.call('INCRBY', KEYS[1], ARGV[1])
if tonumber(ARGV[2]) > 0 and redis.call('PTTL', KEYS[1]) == -1 then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return redis.call('GET', KEYS[1])
"""
INCR = _COMMON + _INCR_BODY
