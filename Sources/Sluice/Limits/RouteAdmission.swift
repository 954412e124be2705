import NIOConcurrencyHelpers
import SluiceConfig
import Synchronization

/// The counts behind one route's limits: live WebSockets in all, per client address and per
/// user, and the upgrade-rate buckets. A value type with the clock passed in; `RouteLimiter`
/// holds it under a lock, taken once per upgrade and once per close, never per frame.
///
/// Every WebSocket is counted, per address and user too, whether or not the route caps them:
/// a reload that adds a cap finds the live counts already there.
struct RouteAdmissionState {
    private(set) var limits: RouteLimits
    private(set) var active = 0
    private(set) var perIP: [IPAddress: Int] = [:]
    private(set) var perUser: [String: Int] = [:]
    private var routeBucket: TokenBucket?
    private var ipBuckets: [IPAddress: TokenBucket] = [:]
    private var requestBucket: TokenBucket?
    private var requestIPBuckets: [IPAddress: TokenBucket] = [:]
    private var userBuckets: [String: TokenBucket] = [:]
    private var requestUserBuckets: [String: TokenBucket] = [:]
    private var admissionsSinceSweep = 0

    init(limits: RouteLimits, now: Int64) {
        self.limits = limits
        routeBucket = limits.upgradeRate.map { TokenBucket($0, now: now) }
        requestBucket = limits.requestRate.map { TokenBucket($0, now: now) }
    }

    /// A plain HTTP request: only the request-rate buckets apply (nothing is held open).
    mutating func admitRequest(ip: IPAddress, now: Int64) -> LimitRejection? {
        if let rate = limits.requestRatePerIP {
            var bucket = requestIPBuckets[ip] ?? TokenBucket(rate, now: now)
            let allowed = bucket.take(now: now)
            requestIPBuckets[ip] = bucket
            if !allowed { return .requestRatePerIP(retryAfter: bucket.secondsUntilToken()) }
            if requestIPBuckets.count > 65_536 { requestIPBuckets = requestIPBuckets.filter { !$0.value.isFull(now: now) } }
        }
        if requestBucket != nil {
            guard requestBucket!.take(now: now) else { return .requestRate(retryAfter: requestBucket!.secondsUntilToken()) }
        }
        return nil
    }

    /// A plain request by an authenticated user: the per-user request rate (known only after
    /// authentication, so apart from `admitRequest`).
    mutating func admitRequest(user: String, now: Int64) -> LimitRejection? {
        guard let rate = limits.requestRatePerUser else { return nil }
        var bucket = requestUserBuckets[user] ?? TokenBucket(rate, now: now)
        let allowed = bucket.take(now: now)
        requestUserBuckets[user] = bucket
        if requestUserBuckets.count > 65_536 { requestUserBuckets = requestUserBuckets.filter { !$0.value.isFull(now: now) } }
        return allowed ? nil : .requestRatePerUser(retryAfter: bucket.secondsUntilToken())
    }

    /// Counts the connection in, or says which limit refuses it (and counts nothing).
    mutating func admit(ip: IPAddress, user: String?, now: Int64) -> LimitRejection? {
        let retry = Int(limits.retryAfter.components.seconds)
        if let cap = limits.maxWebSockets, active >= cap { return .maxWebSockets(retryAfter: retry) }
        if let cap = limits.maxWebSocketsPerIP, perIP[ip, default: 0] >= cap { return .maxWebSocketsPerIP(retryAfter: retry) }
        if let user, let cap = limits.maxWebSocketsPerUser, perUser[user, default: 0] >= cap {
            return .maxWebSocketsPerUser(retryAfter: retry)
        }
        if let rate = limits.upgradeRatePerIP {
            var bucket = ipBuckets[ip] ?? TokenBucket(rate, now: now)
            let allowed = bucket.take(now: now)
            ipBuckets[ip] = bucket
            if !allowed { return .upgradeRatePerIP(retryAfter: bucket.secondsUntilToken()) }
            sweepBuckets(now: now)
        }
        if let user, let rate = limits.upgradeRatePerUser {
            var bucket = userBuckets[user] ?? TokenBucket(rate, now: now)
            let allowed = bucket.take(now: now)
            userBuckets[user] = bucket
            if !allowed { return .upgradeRatePerUser(retryAfter: bucket.secondsUntilToken()) }
            if userBuckets.count > 65_536 { userBuckets = userBuckets.filter { !$0.value.isFull(now: now) } }
        }
        if routeBucket != nil {
            guard routeBucket!.take(now: now) else { return .upgradeRate(retryAfter: routeBucket!.secondsUntilToken()) }
        }
        active += 1
        perIP[ip, default: 0] += 1
        if let user { perUser[user, default: 0] += 1 }
        return nil
    }

    /// Counts an admitted connection out.
    mutating func release(ip: IPAddress, user: String?) {
        precondition(active > 0, "route admission released more often than admitted")
        active -= 1
        Self.decrement(&perIP, ip)
        if let user { Self.decrement(&perUser, user) }
    }

    /// The route's limits after a reload: counts stay; a rate bucket stays while its rate does.
    mutating func update(_ new: RouteLimits, now: Int64) {
        if new.upgradeRate != limits.upgradeRate { routeBucket = new.upgradeRate.map { TokenBucket($0, now: now) } }
        if new.upgradeRatePerIP != limits.upgradeRatePerIP { ipBuckets = [:] }
        if new.requestRate != limits.requestRate { requestBucket = new.requestRate.map { TokenBucket($0, now: now) } }
        if new.requestRatePerIP != limits.requestRatePerIP { requestIPBuckets = [:] }
        if new.upgradeRatePerUser != limits.upgradeRatePerUser { userBuckets = [:] }
        if new.requestRatePerUser != limits.requestRatePerUser { requestUserBuckets = [:] }
        limits = new
    }

    /// Buckets that have refilled completely hold nothing worth keeping; dropping them now and
    /// then bounds the table by the addresses seen within one refill period.
    private mutating func sweepBuckets(now: Int64) {
        admissionsSinceSweep += 1
        guard admissionsSinceSweep >= 1024 || ipBuckets.count > 65_536 else { return }
        admissionsSinceSweep = 0
        ipBuckets = ipBuckets.filter { !$0.value.isFull(now: now) }
    }

    private static func decrement<Key: Hashable>(_ table: inout [Key: Int], _ key: Key) {
        guard let count = table[key] else { return }
        if count <= 1 { table.removeValue(forKey: key) } else { table[key] = count - 1 }
    }

    /// For tests and `/connections`: nothing left behind once every connection is released.
    var isIdle: Bool { active == 0 && perIP.isEmpty && perUser.isEmpty }
}

/// One route's admission control, shared by every listener and event loop.
final class RouteLimiter: Sendable {
    private let state: NIOLockedValueBox<RouteAdmissionState>
    /// The route limits plain requests by rate (in all or per address): without it a request
    /// takes neither the lock nor the time.
    private let requestRateLimited: Synchronization.Atomic<Bool>

    init(limits: RouteLimits) {
        state = NIOLockedValueBox(RouteAdmissionState(limits: limits, now: MonotonicClock.nanoseconds()))
        requestRateLimited = Synchronization.Atomic(Self.limitsRequestRate(limits))
    }

    private static func limitsRequestRate(_ limits: RouteLimits) -> Bool {
        limits.requestRate != nil || limits.requestRatePerIP != nil
    }

    /// A reload changed the route's limits; live counts and buckets carry on.
    func update(_ limits: RouteLimits) {
        let now = MonotonicClock.nanoseconds()
        state.withLockedValue { $0.update(limits, now: now) }
        requestRateLimited.store(Self.limitsRequestRate(limits), ordering: .releasing)
    }

    /// Admits one WebSocket; the lease must be released when the connection ends (exactly once;
    /// `AdmissionLease.release()` makes later calls no-ops).
    func admit(ip: IPAddress, user: String?) -> Result<AdmissionLease, LimitRejection> {
        let now = MonotonicClock.nanoseconds()
        if let rejection = state.withLockedValue({ $0.admit(ip: ip, user: user, now: now) }) {
            return .failure(rejection)
        }
        return .success(AdmissionLease { [state] in state.withLockedValue { $0.release(ip: ip, user: user) } })
    }

    /// Checks a plain request against the route's request-rate buckets.
    func admitRequest(ip: IPAddress) -> LimitRejection? {
        guard requestRateLimited.load(ordering: .acquiring) else { return nil }
        let now = MonotonicClock.nanoseconds()
        return state.withLockedValue { $0.admitRequest(ip: ip, now: now) }
    }

    /// Checks a plain request by `user` against the per-user request rate.
    func admitRequest(user: String) -> LimitRejection? {
        let now = MonotonicClock.nanoseconds()
        return state.withLockedValue { $0.admitRequest(user: user, now: now) }
    }

    var active: Int { state.withLockedValue { $0.active } }
    var isIdle: Bool { state.withLockedValue { $0.isIdle } }

    /// Live WebSockets counted against the limits, and the client addresses and users that
    /// hold a count: what `/metrics` shows, so a leak of counts is visible from outside.
    var counts: (websockets: Int, addresses: Int, users: Int) {
        state.withLockedValue { ($0.active, $0.perIP.count, $0.perUser.count) }
    }

}

/// A counted-in connection: `release()` counts it out once, however many paths call it.
final class AdmissionLease: Sendable {
    private let released = Atomic<Bool>(false)
    private let onRelease: @Sendable () -> Void

    init(_ onRelease: @escaping @Sendable () -> Void) { self.onRelease = onRelease }

    func release() {
        guard !released.exchange(true, ordering: .acquiringAndReleasing) else { return }
        onRelease()
    }
}
