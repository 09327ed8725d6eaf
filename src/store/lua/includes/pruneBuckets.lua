--[[
  pruneBuckets(key, first, n, pruneAbove): deletes the bucket fields a counter no longer needs.
  Runs only when the hash holds more than pruneAbove fields, so the common write stays O(changes);
  the caller sets pruneAbove a little above what the counter's windows keep, so a prune sweeps many
  fields at once and is rare.

    key          the counter hash
    first, n     ARGV[first..first + 2n - 1] holds n pairs (bucketMs, keepFrom): fields
                 b<bucketMs>:<i> with i < keepFrom are deleted; other sizes and meta fields stay
    pruneAbove   HLEN threshold

  Returns the number of fields deleted.
]]
local function pruneBuckets(key, first, n, pruneAbove)
  if redis.call('HLEN', key) <= pruneAbove then
    return 0
  end
  local keepFrom = {}
  for i = first, first + 2 * n - 1, 2 do
    keepFrom[ARGV[i]] = tonumber(ARGV[i + 1])
  end
  local doomed = {}
  for _, field in ipairs(redis.call('HKEYS', key)) do
    local bucketMs, index = string.match(field, '^b(%d+):(%-?%d+)$')
    if bucketMs then
      local keep = keepFrom[bucketMs]
      if keep and tonumber(index) < keep then
        doomed[#doomed + 1] = field
      end
    end
  end
  -- unpack is bounded by Lua's C stack (~8000 values): delete in chunks.
  for i = 1, #doomed, 1000 do
    redis.call('HDEL', key, unpack(doomed, i, math.min(i + 999, #doomed)))
  end
  return #doomed
end
