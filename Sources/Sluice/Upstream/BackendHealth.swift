import SluiceConfig

/// What one backend's health is, from the two sources that judge it, and the operator's word:
/// active checks (`rise` passes up, `fall` failures down), passive outlier detection (`max_fails`
/// failures in a row eject it for `cool_down`, doubling at each ejection that follows within
/// `max_cool_down`), and a drain. A value with no clock of its own: every change is given
/// `now` (monotonic nanoseconds), so it is tested without time passing.
struct BackendHealth: Equatable {
    /// How the backend stands for new connections.
    enum State: String, Equatable {
        case up
        /// Failed its active checks.
        case down
        /// Ejected by passive health until a time.
        case ejected
        /// Taken out by the operator: no new connections.
        case draining
    }

    /// The active checks' verdict; `true` until checks say otherwise.
    private(set) var checkedUp = true
    private var checkPasses = 0
    private var checkFailures = 0
    /// Passive: ejected until this time (0 = not ejected).
    private(set) var ejectedUntil: Int64 = 0
    /// Ejections that followed one another within `max_cool_down`: the next lasts
    /// `cool_down × 2^ejections`.
    private(set) var ejections = 0
    private(set) var draining = false
    /// Since when the backend is back (from down or ejected), for slow start; 0 = not ramping.
    private(set) var backSince: Int64 = 0
    /// How many times it was ejected in all, for the operator's view.
    private(set) var ejectionsTotal = 0

    func state(now: Int64) -> State {
        if draining { return .draining }
        if !checkedUp { return .down }
        if ejectedUntil > now { return .ejected }
        return .up
    }

    /// Whether new connections may go to it (before the all-down fallback).
    func isAvailable(now: Int64) -> Bool { state(now: now) == .up }

    /// The share of its weight it gets now: ramps from 10% to 100% over `slowStart` after it
    /// came back.
    func share(now: Int64, slowStart: Duration) -> Double {
        guard backSince > 0, slowStart > .zero else { return 1 }
        let elapsed = Double(now - backSince) / Double(slowStart.nanoseconds)
        return elapsed >= 1 ? 1 : max(0.1, elapsed)
    }

    // MARK: Active checks

    /// A check passed. Returns `true` when this brought the backend up.
    mutating func checkPassed(rise: Int, now: Int64) -> Bool {
        checkFailures = 0
        guard !checkedUp else { return false }
        checkPasses += 1
        guard checkPasses >= rise else { return false }
        checkedUp = true
        checkPasses = 0
        backSince = now
        // The checks that took it down say it is well: an ejection made meanwhile ends too
        // (Envoy's `successful_active_health_check_uneject_host`).
        if ejectedUntil > now { ejectedUntil = now }
        return true
    }

    /// A check failed. Returns `true` when this took the backend down.
    mutating func checkFailed(fall: Int) -> Bool {
        checkPasses = 0
        guard checkedUp else { return false }
        checkFailures += 1
        guard checkFailures >= fall else { return false }
        checkedUp = false
        checkFailures = 0
        backSince = 0
        return true
    }

    // MARK: Passive health

    /// `max_fails` failures in a row were seen: eject for `cool_down × 2^k` (capped), unless
    /// `mayEject` says the set has ejected as many as it may. Returns how long, if ejected.
    mutating func eject(now: Int64, balance: BalancingConfiguration, mayEject: Bool) -> Duration? {
        guard mayEject, ejectedUntil <= now else { return nil }
        // An ejection long after the last one starts the back-off again.
        if ejectedUntil > 0, now - ejectedUntil > balance.maxCoolDown.nanoseconds { ejections = 0 }
        let base = balance.coolDown.nanoseconds
        let length = min(balance.maxCoolDown.nanoseconds, base << min(ejections, 20))
        ejections += 1
        ejectionsTotal += 1
        ejectedUntil = now + length
        backSince = ejectedUntil
        return .nanoseconds(length)
    }

    /// Lets an ejected backend back at once (the operator enabled it).
    mutating func forgive(now: Int64) {
        if ejectedUntil > now { ejectedUntil = now }
        ejections = 0
    }

    // MARK: The operator

    mutating func drain() { draining = true }

    mutating func enable(now: Int64) {
        if draining { backSince = now }
        draining = false
        forgive(now: now)
    }
}
