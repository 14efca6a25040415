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

For coverage (:mod:`warnd.coverage`) there is also, per delivery, ``sx``
(4 bytes: the alert's number of its subscriber, ``NOSUB`` for none), and
per alert the bitmaps ``tb`` / ``rb`` (subscriber numbers targeted /
reached) and the hash ``cv`` of per-area counters keyed by area index:
``t<i>`` subscribers targeted, ``r<i>`` reached, ``h<i>.<b>`` reached in
time bucket ``b`` (see :data:`REACH_BUCKETS`), ``m<i>`` the longest time to
reach (ms since acceptance). A subscriber counts once, at its first reach.

A batch whose subscriber numbers are a run (``f``, ``f+1`` … in order: each
subscriber of a fresh plan with one endpoint) has ``;r<f>`` after its area
histogram; while none of the run's bits is set yet, targeting and reaching
it set the bits as a range and count the histogram, instead of a bit per
delivery (the same counts, a thousandth of the work).
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
local function rd16(s, i)
  local a, b = string.byte(s, i, i + 1)
  return a * 256 + b
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

-- Coverage: first reach of a subscriber (see the module doc).
local NOSUB = 4294967295
local function reaches(K, ch, to)
  if to == 'D' or to == 'A' then return true end
  if to ~= 'S' then return false end
  -- 'sent' reaches only on channels without asynchronous receipts (plan field rx)
  local rx = redis.call('HGET', K.plan, 'rx') or ''
  return not string.find(',' .. rx .. ',', ',' .. ch .. ',', 1, true)
end
local function reach_bucket(ms)
  if ms < 100 then return 0 end
  local b = 1 + math.floor(4 * math.log(ms / 100) / math.log(2))
  if b > 127 then b = 127 end
  return b
end
-- Bits f .. f+n-1 of a bitmap: if none is set, set them all and return true;
-- else change nothing and return false. Whole bytes as a range, edges by bit.
local function fresh_run(key, f, n)
  local e = f + n
  local b0, b1 = math.floor((f + 7) / 8), math.floor(e / 8)
  local edges = {{}}
  if b1 > b0 then
    for x = f, b0 * 8 - 1 do edges[#edges + 1] = x end
    for x = b1 * 8, e - 1 do edges[#edges + 1] = x end
  else
    b0, b1 = 0, 0
    for x = f, e - 1 do edges[#edges + 1] = x end
  end
  for _, x in ipairs(edges) do
    if redis.call('GETBIT', key, x) == 1 then return false end
  end
  if b1 > b0 then
    if string.find(redis.call('GETRANGE', key, b0, b1 - 1), '[^%z]') then return false end
    redis.call('SETRANGE', key, b0, string.rep('\\255', b1 - b0))
  end
  for _, x in ipairs(edges) do redis.call('SETBIT', key, x, 1) end
  return true
end
local function run_of(hist)
  return tonumber(string.match(hist or '', ';r(%d+)$') or '')
end
local function reach(K, base, n, ch, list, to, now, hist)
  if not K.cv or not reaches(K, ch, to) then return end
  local run = (not list) and run_of(hist)
  local sx, r
  if not (run and fresh_run(K.rb, run, n)) then
    run = nil
    sx = redis.call('GETRANGE', K.sx, base * 4, (base + n) * 4 - 1)
    if #sx < 4 then return end
    r = redis.call('GETRANGE', K.ar, base * 3, (base + n) * 3 - 1)
  end
  local acc = redis.call('HMGET', K.plan, 'accepted_ms', 't0')
  local ms = now - tonumber(acc[1] or acc[2] or now)
  if ms < 0 then ms = 0 end
  local b = reach_bucket(ms)
  local per = {{}}
  local function one(j)
    if (j + 1) * 4 <= #sx then
      local s = rd32(sx, j * 4 + 1)
      if s ~= NOSUB and redis.call('SETBIT', K.rb, s, 1) == 0 then
        local a = rd24(r, j * 3 + 1)
        per[a] = (per[a] or 0) + 1
      end
    end
  end
  if run then
    -- each delivery is its subscriber's first reach: the batch's area histogram
    for a, c in string.gmatch(hist, '(%d+):(%d+)') do
      a = tonumber(a)
      per[a] = (per[a] or 0) + tonumber(c)
    end
  elseif list then
    for _, j in ipairs(list) do one(j) end
  else
    for j = 0, n - 1 do one(j) end
  end
  for a, c in pairs(per) do
    redis.call('HINCRBY', K.cv, 'r' .. a, c)
    redis.call('HINCRBY', K.cv, 'h' .. a .. '.' .. b, c)
    local m = tonumber(redis.call('HGET', K.cv, 'm' .. a) or '-1')
    if ms > m then redis.call('HSET', K.cv, 'm' .. a, ms) end
  end
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
  if count > 0 then
    reach(K, base, n, ch, (not all) and moved or nil, to, tonumber(ARGV[1]), hist)
  end
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
          cnt = KEYS[6], areas = KEYS[7], bx = KEYS[8],
          sx = KEYS[9], rb = KEYS[10], tb = KEYS[11], cv = KEYS[12]}}
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
COVERAGE_PARTS = ("sx", "rb", "tb", "cv")
"""KEYS[9..12] of MOVE, SWEEP and READ ('x'), KEYS[11..14] of ADD_BATCH: coverage."""
REACH_BUCKETS = 4
"""Time-to-reach buckets per doubling: bucket 0 is under 100 ms, bucket ``b`` ≥ 1
holds [100·2^((b-1)/4), 100·2^(b/4)) ms."""

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

CLAIM = (
    _COMMON
    + """
-- A worker's first step on a lane entry: read batch k and claim it, in one call.
-- KEYS[1..12] as MOVE, KEYS[13] the batch records hash.
-- ARGV: now, k, offsets ('*' or comma-separated), reclaimed ('1'/'0'),
--       want the record ('1'/'0': the caller may have it already).
-- Its queued deliveries become sending, or cancelled / expired when the alert
-- was halted or has expired (as MOVE with claim). Returns {record or false,
-- hist, base, size, channel, moved, stale, attempts, count, to}; base -1
-- when there is no such batch.
local K = keys()
local k = ARGV[2]
local e = redis.call('GETRANGE', K.bx, tonumber(k) * 7, tonumber(k) * 7 + 6)
local got = redis.call('HMGET', KEYS[13], k, 'h' .. k)
if #e ~= 7 or not got[1] then return {false, '', -1} end
local base = rd32(e, 1)
local n = string.byte(e, 5) * 256 + string.byte(e, 6)
local ch = CHANNELS[string.byte(e, 7) + 1] or '?'
local hist = got[2] or ''
local now = tonumber(ARGV[1])
local to = 's'
local meta = redis.call('HMGET', K.plan, 'halt', 'exp')
if meta[1] and meta[1] ~= '' then to = 'C'
elseif meta[2] and tonumber(meta[2]) > 0 and now >= tonumber(meta[2]) then to = 'E' end
local r = move(K, base, n, ch, ARGV[3], 'q', to, '', stamp_of(K, now), hist, true,
               ARGV[4] == '1', false)
return {ARGV[5] == '1' and got[1] or false, hist, base, n, ch, r[1], r[2], r[3], r[4], to}
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
-- Append one batch. KEYS[9] batch records hash, KEYS[10] area → index hash,
-- KEYS[11..14] coverage (sx, rb, tb, cv).
-- ARGV: now, record JSON, n, initial state, channel, channel index,
--       distinct area codes (comma), each delivery's index into them (a byte
--       each; two, big-endian, when there are more than 256 codes),
--       subscriber numbers (4 bytes each, big-endian; may be empty),
--       deliveries per code (comma, in the order of the codes),
--       the first subscriber number when the numbers are a run ('' if not).
-- No loop over deliveries in Lua: the area indexes are translated by gsub.
-- Returns {k, base}.
local K = keys()
K.sx, K.rb, K.tb, K.cv = KEYS[11], KEYS[12], KEYS[13], KEYS[14]
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
local wide = #ARGV[8] > n
local gidx, codes, cnts, to3 = {}, {}, {}, {}
local i = 0
for code in string.gmatch(ARGV[7], '[^,]+') do
  local g = redis.call('HGET', aidx, code)
  if not g then
    g = redis.call('RPUSH', K.areas, code) - 1
    redis.call('HSET', aidx, code, g)
  end
  g = tonumber(g)
  gidx[i] = g; codes[i] = code; cnts[i] = 0
  local l = wide and string.char(math.floor(i / 256), i % 256) or string.char(i)
  to3[l] = string.char(math.floor(g / 65536) % 256, math.floor(g / 256) % 256, g % 256)
  i = i + 1
end
redis.call('SETRANGE', K.ar, base * 3, (string.gsub(ARGV[8], wide and '..' or '.', to3)))
local l = 0
for c in string.gmatch(ARGV[10], '%d+') do
  cnts[l] = tonumber(c)
  l = l + 1
end
local h = {}
for l = 0, i - 1 do
  if cnts[l] > 0 then
    h[#h + 1] = gidx[l] .. ':' .. cnts[l]
    redis.call('HINCRBY', K.cnt, codes[l] .. '|' .. ch .. '|' .. NAMES[init], cnts[l])
  end
end
local run = tonumber(ARGV[11] or '')
redis.call('HSET', b, 'h' .. k, table.concat(h, ',') .. (run and (';r' .. run) or ''))
local nums = ARGV[9] or ''
if #nums > 0 and K.cv then
  -- coverage: each subscriber number counts as targeted in its area once
  redis.call('SETRANGE', K.sx, base * 4, nums)
  local newt = {}
  if run and fresh_run(K.tb, run, n) then
    for l = 0, i - 1 do
      if cnts[l] > 0 then newt[gidx[l]] = (newt[gidx[l]] or 0) + cnts[l] end
    end
  else
    local idx = ARGV[8]
    for j = 0, n - 1 do
      local s = rd32(nums, j * 4 + 1)
      if s ~= NOSUB and redis.call('SETBIT', K.tb, s, 1) == 0 then
        local li = wide and rd16(idx, j * 2 + 1) or string.byte(idx, j + 1)
        local g = gidx[li]
        newt[g] = (newt[g] or 0) + 1
      end
    end
  end
  for g, c in pairs(newt) do redis.call('HINCRBY', K.cv, 't' .. g, c) end
end
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

LEASE = """
-- Renew a plan's lease if this process holds it. KEYS: lock, plan hash.
-- ARGV: holder, ttl ms. Returns false when not held, else the plan's halt field.
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return false end
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]))
return redis.call('HGET', KEYS[2], 'halt') or ''
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
-- {state, attempts, ms since t0, area code} each; or 'x', base, n → the
-- subscriber numbers of those slots (KEYS[9] = sx).
local K = keys()
local out = {}
if ARGV[2] == 'x' then
  local base, n = tonumber(ARGV[3]), tonumber(ARGV[4])
  local s = redis.call('GETRANGE', K.sx, base * 4, (base + n) * 4 - 1)
  for j = 0, math.floor(#s / 4) - 1 do out[#out + 1] = rd32(s, j * 4 + 1) end
elseif ARGV[2] == 'b' then
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
