import Crypto
import Foundation
import Logging
import NIOCore
import NIOHTTP1
import NIOSSL
import SluiceConfig
import Synchronization

/// A route's backends and the choice among them, shared by every event loop: round robin
/// (weighted) or least connections, pinned by cookie, client address or a hashed key, around
/// backends that are down (active checks), ejected (passive health) or draining (the operator).
/// Plain requests and upgrades choose the same way, so a client's polling and its upgrade land
/// on the same backend.
///
/// The hot path (`candidates`, `began`/`ended`, `succeeded`) reads and writes atomics only;
/// health changes (rare) go through one lock over the backends' `BackendHealth` values and
/// publish what the hot path reads.
final class BackendSet: Sendable {
    let backends: [Backend]
    let weights: [Int]
    let balance: BalancingConfiguration
    let health: HealthCheckConfiguration?
    let routeName: String
    /// Cookie values naming each backend (a digest of its URL, stable across restarts).
    let stickyIDs: [String]
    /// Round-robin turns honouring the weights (smooth weighted round robin, made once).
    private let schedule: [Int]
    /// Every weight is the same: turns are a plain rotation.
    private let unweighted: Bool
    private let next = Atomic<Int>(0)
    private let stats: [BackendStats]
    private let states: Mutex<[BackendHealth]>
    private let notes: Mutex<[FailureNote]>
    /// Metrics and log for health changes; set once the gateway's metrics exist.
    private let observer: Mutex<BackendObserver?> = Mutex(nil)
    /// The active checks, while running.
    private let checks: Mutex<[HealthChecker]> = Mutex([])

    /// `Until` values published for the hot path.
    private static let drainingMark = Int64.max
    private static let downMark = Int64.max - 1

    init(backends: [Backend], weights: [Int] = [], balance: BalancingConfiguration = BalancingConfiguration(), health: HealthCheckConfiguration? = nil, routeName: String = "") {
        precondition(!backends.isEmpty, "a route has at least one backend")
        self.backends = backends
        self.weights = weights.count == backends.count ? weights : backends.map { _ in 1 }
        self.balance = balance
        self.health = health
        self.routeName = routeName
        stats = backends.map { _ in BackendStats() }
        states = Mutex(backends.map { _ in BackendHealth() })
        notes = Mutex(backends.map { _ in FailureNote() })
        stickyIDs = backends.map { backend in
            String(Array(SHA256.hash(data: Array(backend.url.text.utf8))).prefix(6).map { String(format: "%02x", $0) }.joined())
        }
        schedule = Self.smoothSchedule(self.weights)
        unweighted = Set(self.weights).count == 1
    }

    func backend(_ index: Int) -> Backend { backends[index] }

    /// The `Set-Cookie` value that pins a client to backend `index`, when stickiness is by
    /// cookie and the request (`headers`) does not already carry that pin.
    func stickyCookie(for index: Int, requestHeaders headers: HTTPHeaders) -> String? {
        guard case .cookie(let name) = balance.sticky, CookieHeader.value(named: name, in: headers) != stickyIDs[index] else { return nil }
        return "\(name)=\(stickyIDs[index]); Path=/; HttpOnly; SameSite=Lax"
    }

    // MARK: Choice

    /// What pins a request to one backend, if anything.
    struct Pin {
        var client: IPAddress?
        var stickyCookie: String?
        /// The bytes `balance.hash` keys on (a header, a cookie, the user).
        var hashKey: [UInt8]?
    }

    /// The order of a set with one backend, shared.
    private static let onlyBackend = [0]

    /// Up to `attempts` distinct backends in the order to try them, for one request or
    /// connection and its retries; empty when every backend is draining.
    func candidates(attempts: Int, pin: Pin = Pin(), now: Int64 = MonotonicClock.nanoseconds()) -> [Int] {
        let count = backends.count
        if count == 1 {
            // One backend: nothing to order, and no array made per request. Down or ejected it
            // is tried all the same (as below, when all are); draining, it is not.
            return stats[0].until.load(ordering: .relaxed) == Self.drainingMark ? [] : Self.onlyBackend
        }
        var pool: [Int] = []
        pool.reserveCapacity(count)
        for index in 0..<count where stats[index].until.load(ordering: .relaxed) <= now { pool.append(index) }
        if pool.isEmpty {
            // Every backend is down or ejected: try them all rather than refuse (a check can be
            // wrong; a refusal is certain), except those the operator drains.
            for index in 0..<count where stats[index].until.load(ordering: .relaxed) != Self.drainingMark { pool.append(index) }
            if pool.isEmpty { return [] }
        }
        if pool.count == 1 { return pool }
        let preferred = preferredBackend(pin, among: pool)
        // A pinned request takes no turn: new clients keep spreading evenly around pinned ones.
        let start = preferred == nil ? next.add(1, ordering: .relaxed).oldValue : next.load(ordering: .relaxed)
        var order: [Int]
        switch balance.policy {
        case .roundRobin:
            order = turns(from: start, among: pool)
        case .leastConnections:
            let rotated = (0..<pool.count).map { pool[(start &+ $0) % pool.count] }
            order = rotated.enumerated().sorted { lhs, rhs in
                // Fewest in flight per unit of weight; ties in rotation order.
                let a = stats[lhs.element].active.load(ordering: .relaxed) * weights[rhs.element]
                let b = stats[rhs.element].active.load(ordering: .relaxed) * weights[lhs.element]
                return a != b ? a < b : lhs.offset < rhs.offset
            }.map(\.element)
        }
        if let preferred {
            order.removeAll { $0 == preferred }
            order.insert(preferred, at: 0)
        } else if balance.slowStart > .zero, order.count > 1 {
            // A backend back from trouble takes its turn only at its ramped share.
            let back = stats[order[0]].backSince.load(ordering: .relaxed)
            if back > 0 {
                let share = min(1, max(0.1, Double(now - back) / Double(balance.slowStart.nanoseconds)))
                if share < 1, Double.random(in: 0..<1) >= share { order.swapAt(0, 1) }
            }
        }
        return Array(order.prefix(max(1, min(attempts, count))))
    }

    /// The backend a pin chooses among `pool`, if the request is pinned.
    private func preferredBackend(_ pin: Pin, among pool: [Int]) -> Int? {
        if let key = pin.hashKey, balance.hash != nil { return rendezvous(key, among: pool) }
        switch balance.sticky {
        case .none: return nil
        case .cookie:
            guard let cookie = pin.stickyCookie, let index = stickyIDs.firstIndex(of: cookie), pool.contains(index) else { return nil }
            return index
        case .clientIP:
            guard let client = pin.client else { return nil }
            return rendezvous(client.bytes, among: pool)
        }
    }

    /// The backends of `pool` in round-robin order from turn `start`, weights honoured.
    private func turns(from start: Int, among pool: [Int]) -> [Int] {
        // Equal weights (the common case): a rotation of the pool, with no schedule walk.
        if unweighted { return (0..<pool.count).map { pool[(start &+ $0) % pool.count] } }
        var order: [Int] = []
        order.reserveCapacity(pool.count)
        var seen = [Bool](repeating: false, count: backends.count)
        var inPool = [Bool](repeating: false, count: backends.count)
        for index in pool { inPool[index] = true }
        let length = schedule.count
        for step in 0..<length where order.count < pool.count {
            let index = schedule[(start &+ step) % length]
            if inPool[index], !seen[index] {
                seen[index] = true
                order.append(index)
            }
        }
        return order
    }

    /// Weighted highest-random-weight hashing: each key goes to the backend whose score with the
    /// key is highest, so adding a backend moves only the keys it wins (about 1/N), and a
    /// backend's share follows its weight.
    private func rendezvous(_ key: [UInt8], among pool: [Int]) -> Int? {
        var best: (index: Int, score: Double)?
        for index in pool {
            let hash = Self.fnv1a(key, stickyIDs[index])
            // Uniform in (0, 1), then −w / ln(u): the weighted form of rendezvous hashing.
            let unit = (Double(hash >> 11) + 0.5) / Double(1 << 53)
            let score = -Double(weights[index]) / log(unit)
            if best == nil || score > best!.score { best = (index, score) }
        }
        return best?.index
    }

    /// FNV-1a over the key and the backend id: stable across processes and restarts.
    static func fnv1a(_ key: [UInt8], _ id: String) -> UInt64 {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in key {
            hash ^= UInt64(byte)
            hash = hash &* 0x0000_0100_0000_01b3
        }
        for byte in id.utf8 {
            hash ^= UInt64(byte)
            hash = hash &* 0x0000_0100_0000_01b3
        }
        // A final mix, so keys that differ in their last byte spread over the whole range.
        hash ^= hash >> 33
        hash = hash &* 0xff51_afd7_ed55_8ccd
        hash ^= hash >> 33
        return hash
    }

    /// nginx's smooth weighted round robin, unrolled once: weights 5,1,1 give a a b a c a a, never
    /// five a's in a row.
    static func smoothSchedule(_ weights: [Int]) -> [Int] {
        let total = weights.reduce(0, +)
        var current = [Int](repeating: 0, count: weights.count)
        var schedule: [Int] = []
        schedule.reserveCapacity(total)
        for _ in 0..<total {
            var best = 0
            for index in weights.indices {
                current[index] += weights[index]
                if current[index] > current[best] { best = index }
            }
            current[best] -= total
            schedule.append(best)
        }
        return schedule
    }

    // MARK: In flight

    /// Counts a request or WebSocket in flight on backend `index`.
    func began(_ index: Int) { stats[index].active.add(1, ordering: .relaxed) }
    func ended(_ index: Int) { stats[index].active.subtract(1, ordering: .relaxed) }
    func active(_ index: Int) -> Int { stats[index].active.load(ordering: .relaxed) }

    // MARK: Passive health

    /// The backend answered as a healthy one does: its failures in a row start again.
    func succeeded(_ index: Int) {
        if stats[index].failures.load(ordering: .relaxed) != 0 { stats[index].failures.store(0, ordering: .relaxed) }
    }

    /// A plain request's answer from backend `index` (the exchange's, or one a drain read after
    /// the client cancelled): below 500 the backend is healthy; a 5xx counts against it when
    /// `plain_errors_fail` says so (`request` names what was answered, for the operator's view).
    func answered(_ index: Int, status: Int, to request: @autoclosure () -> String) {
        if status < 500 {
            succeeded(index)
        } else if balance.plainErrorsFail {
            failed(index, reason: "status \(status) to \(request())")
        }
    }

    /// The backend failed a connection (`reason` for the operator's view); `max_fails` in a row
    /// eject it, unless the set has ejected as many as `max_ejection_percent` allows. A lone
    /// backend is never ejected: there is nowhere else to go.
    func failed(_ index: Int, reason: String, now: Int64 = MonotonicClock.nanoseconds()) {
        notes.withLock { $0[index].record(reason) }
        let count = stats[index].failures.add(1, ordering: .relaxed).newValue
        guard count >= balance.maxFails, backends.count > 1 else { return }
        stats[index].failures.store(0, ordering: .relaxed)
        let ejected: Duration? = states.withLock { states in
            let allowed = max(1, backends.count * balance.maxEjectionPercent / 100)
            let ejectedNow = states.filter { $0.state(now: now) == .ejected }.count
            let length = states[index].eject(now: now, balance: balance, mayEject: balance.maxEjectionPercent > 0 && ejectedNow < allowed)
            publish(index, states[index], now: now)
            return length
        }
        if let ejected { observer.withLock { $0 }?.ejected(self, index, for: ejected, reason: reason) }
    }

    /// A request or upgrade left backend `index` for the next one (`reason`: `timeout`, `503`, …).
    func retried(_ index: Int, reason: String) {
        observer.withLock { $0 }?.retried(self, index, reason: reason)
    }

    /// Sets the `up` gauges (at each scrape: an ejection ends without an event).
    func publishMetrics() {
        observer.withLock { $0 }?.publish(self)
    }

    /// Whether new connections avoid backend `index` now.
    func isSkipped(_ index: Int, now: Int64 = MonotonicClock.nanoseconds()) -> Bool {
        stats[index].until.load(ordering: .relaxed) > now
    }

    // MARK: Active checks

    /// An active check of backend `index` passed or failed.
    func checked(_ index: Int, passed: Bool, latency: Duration, reason: String, now: Int64 = MonotonicClock.nanoseconds()) {
        guard let health else { return }
        let changed: Bool = states.withLock { states in
            let changed = passed ? states[index].checkPassed(rise: health.rise, now: now) : states[index].checkFailed(fall: health.fall)
            publish(index, states[index], now: now)
            return changed
        }
        if !passed { notes.withLock { $0[index].record("check: \(reason)") } }
        if let observer = observer.withLock({ $0 }) {
            observer.checked(self, index, latency: latency)
            if changed { observer.changed(self, index, up: passed, reason: reason) }
        }
    }

    // MARK: The operator

    /// Stops new connections to backend `index` (live ones are closed by the caller's drain).
    func drain(_ index: Int) {
        states.withLock { states in
            states[index].drain()
            publish(index, states[index], now: MonotonicClock.nanoseconds())
        }
    }

    /// Brings backend `index` back: draining ends, an ejection is forgiven.
    func enable(_ index: Int) {
        let now = MonotonicClock.nanoseconds()
        states.withLock { states in
            states[index].enable(now: now)
            publish(index, states[index], now: now)
        }
    }

    /// The index of the backend an operator names: its position, its URL, or `host:port`.
    func index(named name: String) -> Int? {
        if let position = Int(name), backends.indices.contains(position) { return position }
        return backends.firstIndex { $0.url.text == name || "\($0.host):\($0.port)" == name || $0.hostHeader == name }
    }

    /// Each backend as the operator sees it.
    func view(now: Int64 = MonotonicClock.nanoseconds()) -> [BackendView] {
        let (health, recent) = (states.withLock { $0 }, notes.withLock { $0 })
        return backends.indices.map { index in
            BackendView(
                url: backends[index].url.text, weight: weights[index], state: health[index].state(now: now),
                active: active(index), failuresInARow: stats[index].failures.load(ordering: .relaxed),
                ejections: health[index].ejectionsTotal,
                ejectedForSeconds: health[index].ejectedUntil > now ? Double(health[index].ejectedUntil - now) / 1e9 : 0,
                share: health[index].share(now: now, slowStart: balance.slowStart), recent: recent[index]
            )
        }
    }

    /// Writes what the hot path reads for backend `index`.
    private func publish(_ index: Int, _ health: BackendHealth, now: Int64) {
        let until: Int64
        switch health.state(now: now) {
        case .draining: until = Self.drainingMark
        case .down: until = Self.downMark
        case .ejected: until = health.ejectedUntil
        case .up: until = 0
        }
        stats[index].until.store(until, ordering: .relaxed)
        stats[index].backSince.store(balance.slowStart > .zero ? health.backSince : 0, ordering: .relaxed)
    }

    // MARK: Lifecycle

    /// Starts the active checks (one per backend, each on one event loop) and reports health
    /// changes to `observer`.
    func start(observer: BackendObserver?, group: any EventLoopGroup) {
        self.observer.withLock { $0 = observer }
        guard let health else { return }
        let made = backends.indices.map { index in
            HealthChecker(set: self, index: index, configuration: health, eventLoop: group.next())
        }
        checks.withLock { $0 = made }
        for checker in made { checker.start() }
    }

    /// Stops the active checks (the set left the configuration).
    func stop() {
        for checker in checks.withLock({ checks in defer { checks = [] }; return checks }) { checker.stop() }
    }

    /// Takes over what an operator decided about backends `old` also had (drains).
    func inherit(from old: BackendSet) {
        let now = MonotonicClock.nanoseconds()
        let draining = Set(old.view(now: now).filter { $0.state == .draining }.map(\.url))
        for index in backends.indices where draining.contains(backends[index].url.text) { drain(index) }
    }
}

/// One backend's live figures, shared by every event loop.
final class BackendStats: Sendable {
    let active = Atomic<Int>(0)
    /// Passive failures in a row.
    let failures = Atomic<Int>(0)
    /// New connections avoid it until this monotonic time (ns); see `BackendSet.publish`.
    let until = Atomic<Int64>(0)
    /// Since when it ramps up under slow start (0 = not ramping).
    let backSince = Atomic<Int64>(0)
}

/// The last failures of a backend, for `GET /backends`.
struct FailureNote: Sendable {
    private(set) var count = 0
    private(set) var last: String?
    private(set) var lastAt: Double?

    mutating func record(_ reason: String) {
        count += 1
        last = reason
        lastAt = WallClock.now()
    }
}

/// A backend as `GET /backends` shows it.
struct BackendView: Sendable {
    var url: String
    var weight: Int
    var state: BackendHealth.State
    var active: Int
    var failuresInARow: Int
    var ejections: Int
    var ejectedForSeconds: Double
    var share: Double
    var recent: FailureNote
}
