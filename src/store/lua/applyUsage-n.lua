--[[
  Applies one tenant's share of an aggregator batch, fenced by Kafka offsets: all of it or nothing,
  so a redelivered batch, a crash before the offset commit or a zombie aggregator never counts an
  event twice or loses one. Every key shares the tenant's hash slot.

  Input:
    KEYS[1]      the tenant's fence hash (field = partition, value = highest applied usage offset)
    KEYS[2..N]   the counter hashes this write changes (N = numberOfKeys, given at call time)

    ARGV[1]      partition
    ARGV[2]      expectedFence   the offset the caller believes is stored for the partition; -1 = none
    ARGV[3]      newFence        the highest offset this write covers
    ARGV[4]      ttlMs           PEXPIRE (re)set on the fence and on every counter of this write
    ARGV[5..]    one block per counter, in KEYS order (the first block is for KEYS[2]); counts come
                 first so the script walks the flat list without parsing anything:
                   nIncr nMeta nPrune pruneAbove
                   field delta        x nIncr    HINCRBY; field = b<bucketMs>:<bucketIndex>
                   field value        x nMeta    HSET; value "" = HDEL (meta fields start with _)
                   bucketMs keepFrom  x nPrune   only when HLEN > pruneAbove: HDEL every
                                                 b<bucketMs>:<i> with i < keepFrom

  Output: {code, fence}
     1, newFence      applied; the fence is now newFence
     0, storedFence   already applied (newFence < stored fence, or newFence = stored fence and the
                      write has increments or nothing at all): nothing changed. A write of meta
                      fields only at the stored fence (what a lapse timer decided between batches)
                      applies.
    -1, storedFence   conflict: stored fence (-1 = none) ~= expectedFence: nothing changed
    -2, argvIndex     ARGV does not match KEYS (a caller bug; where the walk ended): nothing changed

  A Redis error after the checks (WRONGTYPE: a foreign key under our prefix) stops the script
  part-way and Redis keeps what was already written; the store reports it as CONFIG_INVALID, not
  retriable. Nothing else can fail there: the store validates every count and delta before sending.
]]
--- @include "includes/pruneBuckets"

local fenceKey = KEYS[1]
local partition = ARGV[1]

-- The fence check comes first and costs O(1): a stale or zombie writer is turned away cheaply.
local stored = tonumber(redis.call('HGET', fenceKey, partition) or '-1')
if stored ~= tonumber(ARGV[2]) then
  return {-1, stored}
end
local newFence = tonumber(ARGV[3])
if newFence < stored then
  return {0, stored}
end

-- Check the whole layout before the first write: a script cannot roll back what it already did.
local nKeys = #KEYS
local pos = 5
local increments, metas = 0, 0
for _ = 2, nKeys do
  local nIncr, nMeta, nPrune = tonumber(ARGV[pos]), tonumber(ARGV[pos + 1]), tonumber(ARGV[pos + 2])
  if not (nIncr and nMeta and nPrune and tonumber(ARGV[pos + 3])) then
    return {-2, pos}
  end
  increments = increments + nIncr
  metas = metas + nMeta
  pos = pos + 4 + 2 * (nIncr + nMeta + nPrune)
end
if pos ~= #ARGV + 1 then
  return {-2, pos}
end
-- Counts at or below the stored fence are in already; meta fields are absolute values, so a
-- meta-only write at the fence is safe to apply (and to apply twice). An empty one is a redelivery.
if newFence == stored and (increments > 0 or metas == 0) then
  return {0, stored}
end

local ttl = ARGV[4]
pos = 5
for k = 2, nKeys do
  local key = KEYS[k]
  local nIncr, nMeta, nPrune = tonumber(ARGV[pos]), tonumber(ARGV[pos + 1]), tonumber(ARGV[pos + 2])
  local pruneAbove = tonumber(ARGV[pos + 3])
  pos = pos + 4
  for _ = 1, nIncr do
    redis.call('HINCRBY', key, ARGV[pos], ARGV[pos + 1])
    pos = pos + 2
  end
  -- Meta changes only on transitions (a new decision, a breach opening or closing): rare and few.
  for _ = 1, nMeta do
    local value = ARGV[pos + 1]
    if value == '' then
      redis.call('HDEL', key, ARGV[pos])
    else
      redis.call('HSET', key, ARGV[pos], value)
    end
    pos = pos + 2
  end
  if nPrune > 0 then
    pruneBuckets(key, pos, nPrune, pruneAbove)
    pos = pos + 2 * nPrune
  end
  redis.call('PEXPIRE', key, ttl)
end

redis.call('HSET', fenceKey, partition, ARGV[3])
redis.call('PEXPIRE', fenceKey, ttl)
return {1, newFence}
