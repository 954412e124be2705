import SluiceConfig

/// A token bucket: `rate` tokens a second, holding at most `burst`. A value type with the
/// clock passed in, so tests drive time by hand.
struct TokenBucket {
    let rate: Double
    let burst: Double
    private(set) var tokens: Double
    private var updatedAt: Int64

    init(_ limit: RateLimit, now: Int64) {
        rate = limit.perSecond
        burst = Double(limit.burst)
        tokens = burst
        updatedAt = now
    }

    /// Takes one token if there is one. Times are nanoseconds of a monotonic clock.
    mutating func take(now: Int64) -> Bool {
        refill(now: now)
        guard tokens >= 1 else { return false }
        tokens -= 1
        return true
    }

    /// Seconds until a token is available (at least 1, as `Retry-After` counts whole seconds).
    func secondsUntilToken() -> Int {
        let missing = max(0, 1 - tokens)
        return max(1, Int((missing / rate).rounded(.up)))
    }

    /// Whether the bucket would be full at `now`: such a bucket carries no state worth keeping.
    func isFull(now: Int64) -> Bool {
        tokens + Double(now - updatedAt) / 1e9 * rate >= burst
    }

    private mutating func refill(now: Int64) {
        guard now > updatedAt else { return }
        tokens = min(burst, tokens + Double(now - updatedAt) / 1e9 * rate)
        updatedAt = now
    }
}
