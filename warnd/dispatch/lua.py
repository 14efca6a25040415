"""The Lua scripts of the delivery store, kept apart from the Python that calls them.

Per alert (hash tag ``{a:<id>}``), delivery ``n`` (0-based, in the order
batches were written) is a slot in four strings:

``st``  1 byte   state code (see :mod:`warnd.dispatch.states`)
``at``  1 byte   attempts that counted
``ar``  3 bytes  index of its area code in the ``areas`` list
``tm``  4 bytes  ms since the plan's ``t0`` of its last change

and batch ``k`` is 7 bytes of ``bx``: base u32, length u16, channel u8.
``cnt`` counts deliveries per ``<area>|<channel>|<state>`` and every
script that changes a state changes the counters in the same call, so the
counters are exact.
"""

from __future__ import annotations

from warnd.dispatch.states import LUA_NAMES
from warnd.groups import CHANNELS

_CHANNELS = "{" + ", ".join(f"'{c.value}'" for c in CHANNELS) + "}"

_COMMON = f"""
local NAMES = {LUA_NAMES}
local CHANNELS = {_CHANNELS}
local function u32(v)
  return string.char(math.floor(v / 16777216) % 256, math.floor(v / 65536) % 256,
                     math.floor(v / 256) % 256, v % 256)
end
local function rd32(s, i)
  local a, b, c, d = string.byte(s, i, i + 3)
  return ((a * 256 + b) * 256 + c) * 256 + d
end
local function rd24(s, i)
  local a, b, c = string.byte(s, i, i + 2)
  return (a * 256 + b) * 256 + c
end
local areacache = {{}}
local function area(key, i)
  local c = areacache[i]
  if not c then
    c = redis.call('LINDEX', key, i) or '?'
    areacache[i] = c
  end
  return c
end

-- Move the deliveries of one batch (slots base .. base+n-1) whose state is in
-- `from` to `to`. offs: '*' (all) or comma-separated offsets. bump: '1' adds
-- an attempt, 'r' resets attempts, '' leaves them. Returns the offsets moved
-- ('*' when all moved on the fast path), the reclaimed 'sending' offsets
-- (claim only) and the attempts of the moved offsets when asked.
local function move(K, base, n, ch, offs, from, to, bump, stamp, hist, claim, reclaimed, want_at)
  local s = redis.call('GETRANGE', K.st, base, base + n - 1)
  local deltas = {{}}
  local function add(f, d) deltas[f] = (deltas[f] or 0) + d end
  local moved, stale, ats = {{}}, {{}}, {{}}
  local all = false
  local newa = nil
  if offs == '*' and #from == 1 and hist ~= '' and not want_at and s == string.rep(from, n) then
    if bump == 'r' then newa = string.rep('\\0', n)
    elseif bump == '1' then
      local a = redis.call('GETRANGE', K.at, base, base + n - 1)
      local first = string.sub(a, 1, 1)
      if a == string.rep(first, n) then
        newa = string.rep(string.char(math.min(255, (string.byte(first) or 0) + 1)), n)
      end
    else newa = false end
  end
  if newa ~= nil then
    redis.call('SETRANGE', K.st, base, string.rep(to, n))
    redis.call('SETRANGE', K.tm, base * 4, string.rep(stamp, n))
    if newa then redis.call('SETRANGE', K.at, base, newa) end
    for idx, c in string.gmatch(hist, '(%d+):(%d+)') do
      local code = area(K.areas, tonumber(idx))
      add(code .. '|' .. ch .. '|' .. NAMES[from], -tonumber(c))
      add(code .. '|' .. ch .. '|' .. NAMES[to], tonumber(c))
    end
    all = true
  else
    local list = {{}}
    if offs == '*' then
      for j = 0, n - 1 do list[#list + 1] = j end
    else
      for j in string.gmatch(offs, '%d+') do
        j = tonumber(j)
        if j < n then list[#list + 1] = j end
      end
    end
    local a = redis.call('GETRANGE', K.at, base, base + n - 1)
    local r = redis.call('GETRANGE', K.ar, base * 3, (base + n) * 3 - 1)
    local chars, achars, tchanged = nil, nil, {{}}
    for _, j in ipairs(list) do
      local c = string.sub(s, j + 1, j + 1)
      if c ~= '' and string.find(from, c, 1, true) then
        if not chars then
          chars = {{}}
          for i = 1, n do chars[i] = string.sub(s, i, i) end
          achars = {{}}
          for i = 1, n do achars[i] = string.byte(a, i) or 0 end
        end
        chars[j + 1] = to
        if bump == '1' then achars[j + 1] = math.min(255, achars[j + 1] + 1)
        elseif bump == 'r' then achars[j + 1] = 0 end
        local code = area(K.areas, rd24(r, j * 3 + 1))
        add(code .. '|' .. ch .. '|' .. NAMES[c], -1)
        add(code .. '|' .. ch .. '|' .. NAMES[to], 1)
        moved[#moved + 1] = j
        ats[#ats + 1] = achars[j + 1]
        tchanged[#tchanged + 1] = j
      elseif claim and reclaimed and c == 's' then
        stale[#stale + 1] = j
      end
    end
    if chars then
      redis.call('SETRANGE', K.st, base, table.concat(chars))
      if bump ~= '' then
        local out = {{}}
        for i = 1, n do out[i] = string.char(achars[i]) end
        redis.call('SETRANGE', K.at, base, table.concat(out))
      end
      for _, j in ipairs(tchanged) do redis.call('SETRANGE', K.tm, (base + j) * 4, stamp) end
    end
  end
  for f, d in pairs(deltas) do
    if d ~= 0 then redis.call('HINCRBY', K.cnt, f, d) end
  end
  local count = all and n or #moved
  if count > 0 and (to == 'S' or to == 'D') then
    local now = ARGV[1]
    redis.call('HSETNX', K.plan, 'first_sent', now)
    local last = tonumber(redis.call('HGET', K.plan, 'last_sent') or '0')
    if tonumber(now) > last then redis.call('HSET', K.plan, 'last_sent', now) end
  end
  local m = all and '*' or table.concat(moved, ',')
  return {{m, table.concat(stale, ','), table.concat(ats, ','), count}}
end

local function keys()
  return {{plan = KEYS[1], st = KEYS[2], at = KEYS[3], ar = KEYS[4], tm = KEYS[5],
          cnt = KEYS[6], areas = KEYS[7], bx = KEYS[8]}}
end
local function stamp_of(K, now)
  local t0 = tonumber(redis.call('HGET', K.plan, 't0') or now)
  local rel = now - t0
  if rel < 0 then rel = 0 end
  if rel > 4294967295 then rel = 4294967295 end
  return u32(rel)
end
"""

KEY_PARTS = ("plan", "st", "at", "ar", "tm", "cnt", "areas", "bx")
"""KEYS[1..8] of every script below (the ``deliveries`` parts of one alert)."""

MOVE = (
    _COMMON
    + """
-- ARGV: now, base, n, channel, offsets, from, to, bump, hist, claim, reclaimed, want_at
local K = keys()
local now = tonumber(ARGV[1])
local to = ARGV[7]
local claim = ARGV[10] == '1'
if claim then
  local meta = redis.call('HMGET', K.plan, 'halt', 'exp')
  if meta[1] and meta[1] ~= '' then to = 'C'
  elseif meta[2] and tonumber(meta[2]) > 0 and now >= tonumber(meta[2]) then to = 'E' end
end
local r = move(K, tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4], ARGV[5], ARGV[6], to,
               ARGV[8], stamp_of(K, now), ARGV[9], claim, ARGV[11] == '1', ARGV[12] == '1')
r[5] = to
return r
"""
)

SWEEP = (
    _COMMON
    + """
-- Move every delivery of batches k0 .. k1-1 from `from` to `to` (halt, expiry).
-- ARGV: now, k0, k1, from, to. Returns the number moved.
local K = keys()
local now = tonumber(ARGV[1])
local stamp = stamp_of(K, now)
local k0, k1 = tonumber(ARGV[2]), tonumber(ARGV[3])
local bx = redis.call('GETRANGE', K.bx, k0 * 7, k1 * 7 - 1)
local total = 0
for k = 0, math.floor(#bx / 7) - 1 do
  local base = rd32(bx, k * 7 + 1)
  local n = string.byte(bx, k * 7 + 5) * 256 + string.byte(bx, k * 7 + 6)
  local ch = CHANNELS[string.byte(bx, k * 7 + 7) + 1] or '?'
  local r = move(K, base, n, ch, '*', ARGV[4], ARGV[5], '', stamp, '', false, false, false)
  total = total + r[4]
end
return total
"""
)

ADD_BATCH = (
    _COMMON
    + """
-- Append one batch. KEYS[9] batch records hash, KEYS[10] area → index hash.
-- ARGV: now, record JSON, n, initial state, channel, channel index,
--       distinct area codes (comma), per-delivery index into them (comma).
-- Returns {k, base}.
local K = keys()
local b, aidx = KEYS[9], KEYS[10]
local now = tonumber(ARGV[1])
local n = tonumber(ARGV[3])
local init, ch = ARGV[4], ARGV[5]
local k = redis.call('HINCRBY', K.plan, 'nb', 1) - 1
local base = redis.call('HINCRBY', K.plan, 'nd', n) - n
redis.call('HSET', b, k, ARGV[2])
redis.call('SETRANGE', K.bx, k * 7,
  u32(base) .. string.char(math.floor(n / 256) % 256, n % 256, tonumber(ARGV[6])))
redis.call('SETRANGE', K.st, base, string.rep(init, n))
redis.call('SETRANGE', K.at, base, string.rep('\\0', n))
redis.call('SETRANGE', K.tm, base * 4, string.rep(stamp_of(K, now), n))
local gidx, codes, cnts = {}, {}, {}
local i = 0
for code in string.gmatch(ARGV[7], '[^,]+') do
  local g = redis.call('HGET', aidx, code)
  if not g then
    g = redis.call('RPUSH', K.areas, code) - 1
    redis.call('HSET', aidx, code, g)
  end
  gidx[i] = tonumber(g); codes[i] = code; cnts[i] = 0
  i = i + 1
end
local parts = {}
for li in string.gmatch(ARGV[8], '%d+') do
  local l = tonumber(li)
  local g = gidx[l]
  parts[#parts + 1] = string.char(math.floor(g / 65536) % 256, math.floor(g / 256) % 256, g % 256)
  cnts[l] = cnts[l] + 1
end
redis.call('SETRANGE', K.ar, base * 3, table.concat(parts))
local h = {}
for l = 0, i - 1 do
  if cnts[l] > 0 then
    h[#h + 1] = gidx[l] .. ':' .. cnts[l]
    redis.call('HINCRBY', K.cnt, codes[l] .. '|' .. ch .. '|' .. NAMES[init], cnts[l])
  end
end
redis.call('HSET', b, 'h' .. k, table.concat(h, ','))
return {k, base}
"""
)

FIND = """
-- Positions (from ARGV[2]) whose state byte is one of ARGV[1]; at most ARGV[3].
-- Returns {positions..., next} with next = -1 at the end.
local codes, pos, limit = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local len = redis.call('STRLEN', KEYS[1])
local out = {}
local chunk = 65536
local pattern = '[' .. codes .. ']'
while pos < len do
  local s = redis.call('GETRANGE', KEYS[1], pos, pos + chunk - 1)
  local i = 1
  while true do
    local f = string.find(s, pattern, i)
    if not f then break end
    out[#out + 1] = pos + f - 1
    if #out >= limit then
      out[#out + 1] = pos + f
      return out
    end
    i = f + 1
  end
  pos = pos + #s
end
out[#out + 1] = -1
return out
"""

APPEND_EVENTS = """
-- KEYS[1] events hash; ARGV pairs: field, event line. Appends with a newline.
for i = 1, #ARGV, 2 do
  local old = redis.call('HGET', KEYS[1], ARGV[i])
  if old then
    redis.call('HSET', KEYS[1], ARGV[i], old .. '\\n' .. ARGV[i + 1])
  else
    redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
  end
end
return #ARGV / 2
"""

VARIANT = """
-- KEYS[1] messages hash. ARGV: variant key, message JSON. Returns its number.
local v = redis.call('HGET', KEYS[1], 'k:' .. ARGV[1])
if v then return tonumber(v) end
v = redis.call('HINCRBY', KEYS[1], 'n', 1) - 1
redis.call('HSET', KEYS[1], 'k:' .. ARGV[1], v, v, ARGV[2])
return v
"""

PROMOTE = """
-- Move due entries of the retry schedule (KEYS[1]) to their lanes.
-- ARGV: now, limit, lane prefix. Members are JSON with the lane name in "l".
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
for _, m in ipairs(due) do
  local e = cjson.decode(m)
  redis.call('XADD', ARGV[3] .. e.l, '*', 'a', e.a, 'k', e.k, 'o', e.o)
  redis.call('ZREM', KEYS[1], m)
end
return #due
"""

BUCKET = """
-- Token bucket with reservation. KEYS[1] hash. ARGV: rate/s, burst, n.
-- Takes n tokens (the balance may go negative: a debt later callers wait
-- out) and returns the ms to wait before sending.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local rate, burst, n = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local b = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(b[1]) or burst
local ts = tonumber(b[2]) or now
tokens = math.min(burst, tokens + (now - ts) * rate / 1000) - n
redis.call('HSET', KEYS[1], 'tokens', tokens, 'ts', now)
redis.call('PEXPIRE', KEYS[1], math.ceil((burst - tokens) / rate * 1000) + 60000)
if tokens >= 0 then return 0 end
return math.ceil(-tokens / rate * 1000)
"""

READ = (
    _COMMON
    + """
-- Decode slots for Python (the arrays are binary). ARGV[2]: 'b' then batch
-- indexes → {base, size, channel} each; or 'd' then delivery numbers →
-- {state, attempts, ms since t0, area code} each.
local K = keys()
local out = {}
if ARGV[2] == 'b' then
  for i = 3, #ARGV do
    local k = tonumber(ARGV[i])
    local e = redis.call('GETRANGE', K.bx, k * 7, k * 7 + 6)
    if #e == 7 then
      out[#out + 1] = rd32(e, 1)
      out[#out + 1] = string.byte(e, 5) * 256 + string.byte(e, 6)
      out[#out + 1] = CHANNELS[string.byte(e, 7) + 1] or '?'
    else
      out[#out + 1] = -1; out[#out + 1] = 0; out[#out + 1] = ''
    end
  end
elseif ARGV[2] == 'a' then
  -- area codes of slots ARGV[3] .. ARGV[3]+ARGV[4]-1
  local base, n = tonumber(ARGV[3]), tonumber(ARGV[4])
  local r = redis.call('GETRANGE', K.ar, base * 3, (base + n) * 3 - 1)
  for j = 0, math.floor(#r / 3) - 1 do out[#out + 1] = area(K.areas, rd24(r, j * 3 + 1)) end
else
  for i = 3, #ARGV do
    local n = tonumber(ARGV[i])
    local st = redis.call('GETRANGE', K.st, n, n)
    local at = redis.call('GETRANGE', K.at, n, n)
    local tm = redis.call('GETRANGE', K.tm, n * 4, n * 4 + 3)
    local ar = redis.call('GETRANGE', K.ar, n * 3, n * 3 + 2)
    out[#out + 1] = st
    out[#out + 1] = string.byte(at) or 0
    out[#out + 1] = (#tm == 4) and rd32(tm, 1) or 0
    out[#out + 1] = (#ar == 3) and area(K.areas, rd24(ar, 1)) or ''
  end
end
return out
"""
)
