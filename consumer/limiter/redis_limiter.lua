-- Same rules as consumer/limiter/gcra.py and adaptive.py.
-- KEYS[1] GCRA TAT   KEYS[2] adaptive factor hash {f, t}   KEYS[3] latest grants {ticket: time}
-- ARGV op ('acquire' | 'throttle' | 'late' | 'refund' | 'peek'), rate, burst, safety_margin,
--      decrease, floor, recovery_per_s, holdoff_s, retry_after_s, capacity, catch_up_intervals,
--      ticket, late_s, ahead_s, lead_s
-- returns {granted (1/0), wait_s, factor}, and for acquire the server time of the decision:
-- granted, the slot is wait_s from now (reserved); else ask again in wait_s.
-- Numbers as strings (Lua numbers would be truncated)
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local op = ARGV[1]
local rate, burst, margin = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local decrease, min_factor = tonumber(ARGV[5]), tonumber(ARGV[6])
local recovery, holdoff = tonumber(ARGV[7]), tonumber(ARGV[8])
local capacity, catch_up_intervals = tonumber(ARGV[10]), tonumber(ARGV[11])
local function fmt(x) return string.format('%.6f', x) end
local function ttl_ms(s) return math.ceil(s * 1000) + 1000 end

local factor, since = 1.0, nil
local saved = redis.call('HMGET', KEYS[2], 'f', 't')
if saved[1] then
  since = tonumber(saved[2])
  factor = math.min(1.0, tonumber(saved[1]) + recovery * (now - since))
end
if op == 'peek' then return {0, '0', fmt(factor)} end
if op == 'late' then
  local counted = redis.call('ZSCORE', KEYS[3], ARGV[12])
  if counted then redis.call('ZADD', KEYS[3], 'XX', fmt(tonumber(counted) + tonumber(ARGV[13])), ARGV[12]) end
  return {0, '0', fmt(factor)}
end
if op == 'refund' then
  redis.call('ZREM', KEYS[3], ARGV[12])
  return {0, '0', fmt(factor)}
end

local interval = (1 + margin) / (rate * factor)
local stored = tonumber(redis.call('GET', KEYS[1]))

if op == 'throttle' then
  if not since or now - since >= holdoff then
    factor = math.max(min_factor, factor * decrease)
    redis.call('HSET', KEYS[2], 'f', fmt(factor), 't', fmt(now))
    redis.call('PEXPIRE', KEYS[2], ttl_ms(math.max((1 - factor) / recovery, holdoff)))
  end
  local retry_after = tonumber(ARGV[9])
  if retry_after > 0 then
    interval = (1 + margin) / (rate * factor)
    local tat = now
    if stored and stored > now then tat = stored end
    tat = math.max(tat, now + retry_after + (burst - 1) * interval)
    redis.call('SET', KEYS[1], fmt(tat), 'PX', ttl_ms(tat - now))
  end
  return {0, '0', fmt(factor)}
end

-- acquire / reserve: the next free slot at t >= now (gcra.next_slot: at most three decisions of
-- gcra.decide at t), taken if it is at most ARGV[14] (ahead_s; 0 for acquire) away; no sooner
-- than ARGV[15] (lead_s: the answer's usual way back, within ahead_s) from now
local ahead = math.max(0, tonumber(ARGV[14]))
local lead = math.min(ahead, math.max(0, tonumber(ARGV[15])))
local span = capacity * interval
local oldest = nil
if redis.call('ZCARD', KEYS[3]) >= capacity then
  oldest = tonumber(redis.call('ZREVRANGE', KEYS[3], capacity - 1, capacity - 1, 'WITHSCORES')[2])
end
local t, next_tat = now + lead, nil
for _ = 1, 4 do
  local current = t
  if stored and stored > t - catch_up_intervals * interval then current = stored end
  local wait = current - (burst - 1) * interval - t
  if wait <= 0.000001 and oldest then wait = oldest + span - t end
  if wait <= 0.000001 then next_tat = current + interval; break end
  t = t + wait
end
local wait = t - now
if not next_tat then return {0, fmt(math.max(wait - ahead, 0.001)), fmt(factor), fmt(now)} end
if wait - ahead > 0.000001 then return {0, fmt(wait - ahead), fmt(factor), fmt(now)} end
if wait <= 0.000001 then wait = 0 end
redis.call('SET', KEYS[1], fmt(next_tat), 'PX', ttl_ms(next_tat - now))
redis.call('ZADD', KEYS[3], fmt(now + wait), ARGV[12])
redis.call('ZREMRANGEBYRANK', KEYS[3], 0, -capacity - 1)
redis.call('PEXPIRE', KEYS[3], ttl_ms(wait + span))
return {1, fmt(wait), fmt(factor), fmt(now)}
