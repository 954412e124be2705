import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL

/// Which idle connections a pool keeps: a value type with the clock passed in, so the rules
/// (cap, idle timeout, never reuse a connection whose exchange did not finish cleanly) are
/// tested without sockets.
///
/// The cap is held after a short grace rather than at once. Under a burst a proxy has more
/// requests in flight than `maxIdle`; closing every connection above the cap as its response
/// ends, only to open a new one for the next request a moment later, costs a connect and a
/// close per request past the cap (on loopback at a thousand clients, five of six requests
/// churned and throughput fell to a third). Connections above the cap are closed by the
/// sweep once idle for `burstGrace`, oldest first, so a sustained burst reuses them and a
/// passing one leaves the backend with `maxIdle` within the grace.
///
/// A backend that announces how long it keeps an idle connection (`Keep-Alive: timeout=N`;
/// Node closes after 5 s, Apache 5, where the pool's default is 30) gets its connections back
/// no later than `backendMargin` before that: a request sent on a connection the backend is
/// closing at that moment fails, and one that is not idempotent cannot be retried.
struct ConnectionPoolState<ID: Hashable & Sendable>: Sendable {
    let maxIdle: Int
    let idleTimeout: Int64
    /// How long connections above `maxIdle` may stay idle (never longer than `idleTimeout`).
    let burstGrace: Int64
    /// Oldest first; reuse takes the warmest (last). `limit` is how long this one may stay idle:
    /// the idle timeout, or less when its backend announced a shorter keep-alive.
    private(set) var idle: [(id: ID, since: Int64, limit: Int64)] = []

    /// One second, in the nanoseconds the pool's clock counts.
    static var defaultBurstGrace: Int64 { 1_000_000_000 }
    /// How long before a backend's announced keep-alive timeout the pool stops reusing its
    /// connection: the backend's clock started when it sent the response's end, a little
    /// before the pool's, and a request on the way must reach it before it closes.
    static var backendMargin: Int64 { 1_000_000_000 }

    init(maxIdle: Int, idleTimeout: Int64, burstGrace: Int64 = Self.defaultBurstGrace) {
        self.maxIdle = maxIdle
        self.idleTimeout = idleTimeout
        self.burstGrace = min(burstGrace, idleTimeout)
    }

    /// An idle connection to reuse, and those found expired on the way (to close).
    mutating func checkout(now: Int64) -> (ID?, expired: [ID]) {
        var expired = expire(now: now)
        // `expire` goes from the oldest and stops at the first still in time; one behind it
        // with a shorter limit of its backend's is checked here before it is handed out.
        while let last = idle.popLast() {
            guard now - last.since >= last.limit else { return (last.id, expired) }
            expired.append(last.id)
        }
        return (nil, expired)
    }

    enum Checkin: Equatable {
        case keep
        /// Close it: the exchange did not end cleanly, or pooling is off (`maxIdle` 0).
        case close
    }

    /// A connection comes back after an exchange. `reusable` is false unless the request was
    /// fully sent, the response fully read, and neither side asked to close. `backendKeepAlive`
    /// is what the last response announced (`Keep-Alive: timeout=`), in nanoseconds: a
    /// connection it leaves less than `backendMargin` of is closed instead of kept.
    mutating func checkin(_ id: ID, reusable: Bool, backendKeepAlive: Int64? = nil, now: Int64) -> Checkin {
        guard reusable, maxIdle > 0 else { return .close }
        var limit = idleTimeout
        if let backendKeepAlive {
            limit = min(limit, backendKeepAlive - Self.backendMargin)
            guard limit > 0 else { return .close }
        }
        idle.append((id, now, limit))
        return .keep
    }

    /// Idle connections past the timeout, and those above the cap past the grace, removed.
    mutating func expire(now: Int64) -> [ID] {
        // Oldest first: count the ones due from the front (usually none), then drop them at once.
        var due = 0
        while due < idle.count, now - idle[due].since >= allowedIdleTime(idle[due].limit, keeping: idle.count - due) { due += 1 }
        guard due > 0 else { return [] }
        defer { idle.removeFirst(due) }
        return idle[..<due].map(\.id)
    }

    /// How long the oldest of `count` idle connections, allowed `limit`, may stay: no longer
    /// than the grace while they are more than the cap.
    private func allowedIdleTime(_ limit: Int64, keeping count: Int) -> Int64 {
        count > maxIdle ? min(burstGrace, limit) : limit
    }

    /// The backend closed an idle connection.
    mutating func remove(_ id: ID) {
        idle.removeAll { $0.id == id }
    }

    /// When the scheduled sweep runs, if one is: idle connections time out, and those above
    /// the cap leave after the grace, even when no request comes to take or return one.
    private(set) var sweepDue: Int64?

    /// When the oldest idle connection falls due, if any is idle.
    private var nextDue: Int64? {
        guard let oldest = idle.first else { return nil }
        return oldest.since + allowedIdleTime(oldest.limit, keeping: idle.count)
    }

    /// A sweep to schedule: when connections are idle and none is scheduled by then (a burst
    /// past the cap needs one sooner than the idle timeout).
    mutating func armSweep() -> Int64? {
        guard let due = nextDue else { return nil }
        if let scheduled = sweepDue, scheduled <= due { return nil }
        sweepDue = due
        return due
    }

    /// The sweep scheduled for `due` runs: the connections to close, and when to sweep next
    /// (nil once nothing is idle, or when `due` was superseded by a sooner sweep).
    mutating func sweep(now: Int64, scheduledFor due: Int64) -> (expired: [ID], next: Int64?) {
        guard sweepDue == due else { return ([], nil) }
        sweepDue = nil
        let expired = expire(now: now)
        return (expired, armSweep())
    }
}

/// Keep-alive connections to HTTP backends, per backend and per event loop (a request always
/// uses a connection on its client's loop, so the exchange needs no locks).
final class UpstreamPool: Sendable {
    /// Connections are kept per backend identity (`Backend.PoolIdentity`), event loop and idle
    /// rules: routes naming the same backend share idle connections only when their `pool`
    /// settings agree, so each route's `max_idle` and idle timeout hold for what it keeps.
    struct Key: Hashable, Sendable {
        let backend: Backend.PoolIdentity
        let loop: ObjectIdentifier
        let maxIdle: Int
        let idleTimeout: Int64

        init(_ backend: Backend, settings: PoolSettings, loop: any EventLoop) {
            self.backend = backend.poolIdentity
            self.loop = ObjectIdentifier(loop)
            self.maxIdle = settings.maxIdle
            self.idleTimeout = settings.idleTimeout
        }

        /// One word into the hasher, not four: the key is hashed twice a request (take and give
        /// back), and each word fed to it costs more than mixing them here. The identity's hash
        /// is already spread; equal keys still mix to equal words, so `==` keeps them apart.
        func hash(into hasher: inout Hasher) {
            var mixed = UInt(bitPattern: backend.hash) &* 0x9E37_79B9_7F4A_7C15
            mixed ^= UInt(bitPattern: loop)
            mixed = (mixed &* 0x9E37_79B9_7F4A_7C15) ^ UInt(truncatingIfNeeded: maxIdle) ^ (UInt(truncatingIfNeeded: idleTimeout) &<< 20)
            hasher.combine(mixed)
        }
    }

    /// The idle connections themselves are the pool state's entries: taking one and giving it
    /// back is an array operation, with no second table to keep in step.
    private let states = NIOLockedValueBox([Key: ConnectionPoolState<UpstreamConnection>]())

    /// An idle connection to `backend` on `eventLoop`, if one is kept: taken at once, without
    /// a future, on the hot path of every proxied request. `now` is the loop's clock if the
    /// caller has read it already.
    func takeIdle(_ backend: Backend, settings: PoolSettings, on eventLoop: any EventLoop, now: NIODeadline? = nil) -> UpstreamConnection? {
        let key = Key(backend, settings: settings, loop: eventLoop)
        let now = Int64(clamping: (now ?? eventLoop.now).uptimeNanoseconds)
        let (reused, expired) = states.withLockedValue { states -> (UpstreamConnection?, [UpstreamConnection]) in
            // Mutated in place: a copy of the state would copy its array on every request.
            let fresh = ConnectionPoolState<UpstreamConnection>(maxIdle: settings.maxIdle, idleTimeout: settings.idleTimeout)
            var (candidate, expired) = states[key, default: fresh].checkout(now: now)
            // One the backend closed but whose close was not seen yet is dropped; try the next.
            while let connection = candidate, !connection.channel.isActive {
                let next = states[key, default: fresh].checkout(now: now)
                candidate = next.0
                expired += next.expired
            }
            return (candidate, expired)
        }
        for connection in expired { connection.channel.close(promise: nil) }
        reused?.reused = true
        return reused
    }

    /// Gives a connection back after an exchange; closes it unless it is `reusable`.
    /// `backendKeepAliveSeconds` is the last response's `Keep-Alive: timeout=`, if it had one;
    /// `now` the loop's clock if the caller has read it already.
    func release(
        _ connection: UpstreamConnection, backend: Backend, settings: PoolSettings, reusable: Bool, backendKeepAliveSeconds: Int? = nil,
        now: NIODeadline? = nil
    ) {
        let loop = connection.channel.eventLoop
        let key = Key(backend, settings: settings, loop: loop)
        let now = Int64(clamping: (now ?? loop.now).uptimeNanoseconds)
        let (checkin, sweepDue) = states.withLockedValue { states in
            let fresh = ConnectionPoolState<UpstreamConnection>(maxIdle: settings.maxIdle, idleTimeout: settings.idleTimeout)
            // One lookup: the entry is checked in to and its sweep armed in place.
            return Self.checkin(
                connection, into: &states[key, default: fresh], reusable: reusable && connection.channel.isActive,
                backendKeepAlive: backendKeepAliveSeconds.map { Int64($0) * 1_000_000_000 }, now: now
            )
        }
        if let sweepDue { scheduleSweep(key, at: sweepDue, on: loop) }
        switch checkin {
        case .close:
            connection.channel.close(promise: nil)
        case .keep:
            // An idle connection the backend closes leaves the pool at once. Key and identity
            // stay the same for the connection's life: the hook is made once. It holds the
            // connection strongly: a weak reference would give the connection a side table,
            // and every retain of it on every request would take the slow path. The handler
            // drops the hook when the channel goes inactive, which every channel does.
            guard connection.onIdleClose == nil else { return }
            connection.onIdleClose = { [states] in
                states.withLockedValue { states in states[key]?.remove(connection) }
            }
        }
    }

    private static func checkin(
        _ connection: UpstreamConnection, into state: inout ConnectionPoolState<UpstreamConnection>, reusable: Bool,
        backendKeepAlive: Int64?, now: Int64
    ) -> (ConnectionPoolState<UpstreamConnection>.Checkin, sweepDue: Int64?) {
        let checkin = state.checkin(connection, reusable: reusable, backendKeepAlive: backendKeepAlive, now: now)
        return (checkin, checkin == .close ? nil : state.armSweep())
    }

    /// Closes the idle connections of `key` that passed the idle timeout, on the loop they
    /// belong to, and comes back when the next one is due.
    private func scheduleSweep(_ key: Key, at due: Int64, on loop: any EventLoop) {
        loop.scheduleTask(deadline: .uptimeNanoseconds(UInt64(max(0, due)))) { [weak self] in
            guard let self else { return }
            let now = Int64(clamping: loop.now.uptimeNanoseconds)
            let (expired, next) = self.states.withLockedValue { states in
                states[key]?.sweep(now: now, scheduledFor: due) ?? ([], nil)
            }
            for connection in expired { connection.channel.close(promise: nil) }
            if let next { self.scheduleSweep(key, at: next, on: loop) }
        }
    }

    /// Closes every idle connection (shutdown).
    func closeAll() {
        let all = states.withLockedValue { states in
            defer { states = [:] }
            return states.values.flatMap { $0.idle.map(\.id) }
        }
        for connection in all { connection.channel.close(promise: nil) }
    }
}

/// The pool's limits, from the route.
struct PoolSettings: Sendable {
    var maxIdle: Int
    /// Nanoseconds.
    var idleTimeout: Int64
    var connectTimeout: TimeAmount
}
