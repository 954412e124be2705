import Crypto

/// The Lua scripts that keep the cluster's counts in Redis. Each runs atomically on the server,
/// so a check and the count it guards can never be split by another instance's upgrade: one
/// round trip per upgrade (`admit`) and per close (`release`).
///
/// The layout, under the configured prefix `P`:
/// - `P:ws:<route>` and `P:ws:<route>:user:<user>`: sorted sets of lease ids (`<instance>/<n>`),
///   scored by the time (ms) the lease lapses unless its instance's heartbeat renews it.
/// - `P:leases:<instance>`: the instance's leases, lease id → JSON `{"k": [keys], …summary}`;
///   the cluster view reads the summaries.
/// - `P:instances`: live instances, scored by when they lapse.
/// - `P:rate:<route>:<kind>:<subject>`: a GCRA's theoretical arrival time (ms).
/// Times come from the server's clock (`TIME`), so instances' clocks never have to agree.
enum ClusterScripts {
    /// A script and the SHA-1 `EVALSHA` names it by.
    struct Script: Sendable {
        let source: String
        let sha: String

        init(_ source: String) {
            self.source = source
            sha = Insecure.SHA1.hash(data: Array(source.utf8)).map { byte in
                let hex = String(byte, radix: 16)
                return byte < 16 ? "0" + hex : hex
            }.joined()
        }
    }

    private static let clock = """
        local t = redis.call('TIME')
        local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
        """

    /// KEYS: index, instances, caps…, rates…  ARGV: instance, lease id ('' = only the rates),
    /// ttl ms, cap count, limits…, rate count, (interval ms, tolerance ms)…, record JSON.
    /// Answers `{1}`, or `{0, index of the refusing key among caps then rates, retry ms}`.
    static let admit = Script(clock + """

        local ttl = tonumber(ARGV[3])
        local ncaps = tonumber(ARGV[4])
        local a = 5
        for c = 1, ncaps do
          local key = KEYS[2 + c]
          local limit = tonumber(ARGV[a]); a = a + 1
          redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
          if redis.call('ZCARD', key) >= limit then return {0, c, 0} end
        end
        local nrates = tonumber(ARGV[a]); a = a + 1
        local arrivals = {}
        for r = 1, nrates do
          local key = KEYS[2 + ncaps + r]
          local interval = tonumber(ARGV[a]); local tolerance = tonumber(ARGV[a + 1]); a = a + 2
          local tat = tonumber(redis.call('GET', key) or now)
          if tat < now then tat = now end
          if tat - now > tolerance then return {0, ncaps + r, math.ceil(tat - tolerance - now)} end
          arrivals[r] = tat + interval
        end
        for r = 1, nrates do
          redis.call('SET', KEYS[2 + ncaps + r], tostring(arrivals[r]), 'PX', math.ceil(arrivals[r] - now) + 1000)
        end
        if ARGV[2] ~= '' then
          for c = 1, ncaps do
            redis.call('ZADD', KEYS[2 + c], now + ttl, ARGV[2])
            redis.call('PEXPIRE', KEYS[2 + c], ttl)
          end
          redis.call('HSET', KEYS[1], ARGV[2], ARGV[a])
          redis.call('PEXPIRE', KEYS[1], ttl)
          redis.call('ZADD', KEYS[2], now + ttl, ARGV[1])
        end
        return {1}
        """)

    /// KEYS: index.  ARGV: lease id.  Gives a lease back: 1, or 0 when it was not held.
    static let release = Script("""
        local record = redis.call('HGET', KEYS[1], ARGV[1])
        if not record then return 0 end
        for _, key in ipairs(cjson.decode(record).k) do redis.call('ZREM', key, ARGV[1]) end
        redis.call('HDEL', KEYS[1], ARGV[1])
        return 1
        """)

    /// KEYS: index, instances.  ARGV: instance, ttl ms, cursor, batch.  Renews one batch of the
    /// instance's leases from `cursor` (an HSCAN cursor; `0` starts), re-adding any that lapsed
    /// while the instance could not reach Redis; answers the next cursor (`0`: done). Batches
    /// keep each call short, so no heartbeat holds Redis up for the other instances' upgrades.
    static let heartbeat = Script(clock + """

        local ttl = tonumber(ARGV[2])
        local scanned = redis.call('HSCAN', KEYS[1], ARGV[3], 'COUNT', ARGV[4])
        local page = scanned[2]
        for j = 1, #page, 2 do
          for _, key in ipairs(cjson.decode(page[j + 1]).k) do
            redis.call('ZADD', key, now + ttl, page[j])
            redis.call('PEXPIRE', key, ttl)
          end
        end
        redis.call('PEXPIRE', KEYS[1], ttl)
        redis.call('ZADD', KEYS[2], now + ttl, ARGV[1])
        return scanned[1]
        """)

    /// KEYS: index, instances.  ARGV: instance, ttl ms, keep count, ids to keep if present…,
    /// then (id, record JSON) pairs.  Makes Redis hold exactly the leases the instance says it
    /// holds: after an outage, releases that could not be sent are done and admissions made
    /// on local limits alone are counted. Answers how many leases it now holds.
    static let reconcile = Script(clock + """

        local ttl = tonumber(ARGV[2])
        local nkeep = tonumber(ARGV[3])
        local keep = {}
        for j = 1, nkeep do keep[ARGV[3 + j]] = true end
        local all = redis.call('HGETALL', KEYS[1])
        for j = 1, #all, 2 do
          if not keep[all[j]] then
            for _, key in ipairs(cjson.decode(all[j + 1]).k) do redis.call('ZREM', key, all[j]) end
            redis.call('HDEL', KEYS[1], all[j])
          end
        end
        local held = 0
        for j = 4 + nkeep, #ARGV, 2 do
          for _, key in ipairs(cjson.decode(ARGV[j + 1]).k) do
            redis.call('ZADD', key, now + ttl, ARGV[j])
            redis.call('PEXPIRE', key, ttl)
          end
          redis.call('HSET', KEYS[1], ARGV[j], ARGV[j + 1])
          held = held + 1
        end
        redis.call('PEXPIRE', KEYS[1], ttl)
        redis.call('ZADD', KEYS[2], now + ttl, ARGV[1])
        return held
        """)

    /// KEYS: instances.  ARGV: prefix.  Every live instance's lease records.
    static let view = Script(clock + """

        redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
        local out = {}
        for _, instance in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
          for _, record in ipairs(redis.call('HVALS', ARGV[1] .. ':leases:' .. instance)) do table.insert(out, record) end
        end
        return out
        """)

    static let all = [admit, release, heartbeat, reconcile, view]
}
