import NIOConcurrencyHelpers
import NIOCore
import Synchronization

/// The live relayed WebSockets, so that shutdown and the admin listener can see and reach each
/// one.
///
/// Registration happens once per connection, not per frame. Live counters belong to each
/// connection's relay on its own event loop; `snapshots()` asks every event loop once for the
/// figures of all its connections, so reading costs the relay nothing until someone looks.
public final class ConnectionRegistry: Sendable {
    /// One connection and its relay, reached on the relay's event loop (`eventLoop`). The relay
    /// itself is held, not closures over it: three closure contexts per connection cost three
    /// allocations at each upgrade and their memory for as long as it lives.
    struct Entry: Sendable {
        var info: ConnectionInfo
        var relay: NIOLoopBound<WebSocketRelay>

        init(info: ConnectionInfo, relay: NIOLoopBound<WebSocketRelay>) {
            self.info = info
            self.relay = relay
        }

        /// The relay's loop (kept once, in `relay`: an entry is a dictionary slot per connection).
        var eventLoop: any EventLoop { relay.eventLoop }

        /// The live figures (on `eventLoop`).
        func snapshot() -> ConnectionSnapshot { relay.value.snapshot(info) }

        /// Closes both sides with these codes (on `eventLoop`).
        func close(_ clientCode: UInt16, _ backendCode: UInt16, _ reason: String, _ ending: WebSocketRelay.StateMachine.Ending) {
            relay.value.close(downstreamCode: clientCode, upstreamCode: backendCode, reason: reason, ending: ending)
        }

        /// Closes both sides at the TCP level now (a drain's deadline; on `eventLoop`).
        func abort() { relay.value.abort() }
    }

    private let entries = NIOLockedValueBox<[UInt64: Entry]>([:])
    private let nextID = Atomic<UInt64>(0)

    public init() {}

    /// A fresh connection id (ids are never reused within a process).
    func makeID() -> UInt64 { nextID.add(1, ordering: .relaxed).newValue }

    func register(_ entry: Entry) {
        entries.withLockedValue { $0[entry.info.id] = entry }
    }

    func remove(_ id: UInt64) {
        _ = entries.withLockedValue { $0.removeValue(forKey: id) }
    }

    /// Number of live relayed WebSockets.
    public var count: Int { entries.withLockedValue { $0.count } }

    /// Sends every live WebSocket a close with `code` (1001 on shutdown, 1012 on restart).
    public func closeAll(code: UInt16, reason: String) {
        let all = entries.withLockedValue { Array($0.values) }
        for entry in all {
            entry.eventLoop.execute { entry.close(code, code, reason, .shutdown) }
        }
    }

    /// The ids of the live WebSockets `matching` says (all of them by default).
    func ids(matching: (ConnectionInfo) -> Bool = { _ in true }) -> [UInt64] {
        entries.withLockedValue { $0.values.filter { matching($0.info) }.map(\.info.id) }
    }

    /// Whether WebSocket `id` is still live.
    func isLive(_ id: UInt64) -> Bool {
        entries.withLockedValue { $0[id] != nil }
    }

    /// How many of `ids` are still live.
    func count(of ids: Set<UInt64>) -> Int {
        entries.withLockedValue { entries in ids.reduce(0) { $0 + (entries[$1] == nil ? 0 : 1) } }
    }

    /// Closes each of `ids` with `code` both ways after its own delay (a drain's spread).
    func scheduleCloses(_ ids: [UInt64], after delays: [Duration], code: UInt16, reason: String) {
        let chosen = entries.withLockedValue { entries in zip(ids, delays).compactMap { id, delay in entries[id].map { ($0, delay) } } }
        for (entry, delay) in chosen {
            entry.eventLoop.scheduleTask(in: TimeAmount(delay)) { entry.close(code, code, reason, .shutdown) }
        }
    }

    /// Aborts each of `ids` still live.
    func abort(_ ids: Set<UInt64>) {
        let chosen = entries.withLockedValue { entries in ids.compactMap { entries[$0] } }
        for entry in chosen { entry.eventLoop.execute { entry.abort() } }
    }

    /// Closes one connection: `clientCode` to the client, `backendCode` to the backend; one
    /// already closing ends within its close timeout. `false` when no live connection has that id.
    func close(id: UInt64, clientCode: UInt16, backendCode: UInt16, reason: String) -> Bool {
        guard let entry = entries.withLockedValue({ $0[id] }) else { return false }
        entry.eventLoop.execute { entry.close(clientCode, backendCode, reason, .kicked) }
        return true
    }

    /// Live figures of every connection (or of `ids` only), one hop per event loop.
    func snapshots(ids: Set<UInt64>? = nil, on eventLoop: any EventLoop) -> EventLoopFuture<[ConnectionSnapshot]> {
        let chosen = entries.withLockedValue { entries in
            ids.map { ids in ids.compactMap { entries[$0] } } ?? Array(entries.values)
        }
        var byLoop: [ObjectIdentifier: (any EventLoop, [Entry])] = [:]
        for entry in chosen {
            byLoop[ObjectIdentifier(entry.eventLoop), default: (entry.eventLoop, [])].1.append(entry)
        }
        let futures = byLoop.values.map { loop, group in
            loop.submit { group.map { $0.snapshot() } }
        }
        return EventLoopFuture.whenAllSucceed(futures, on: eventLoop).map { $0.flatMap { $0 } }
    }
}

/// What is fixed about a connection once it relays. A class of constants: the registry's entry,
/// the relay's end-of-life report and every snapshot share one copy, so an idle WebSocket's
/// dictionary slot and closure hold a reference rather than ten fields each.
final class ConnectionInfo: Sendable {
    let id: UInt64
    let route: String
    let listener: String
    let client: String
    let user: String?
    let backend: String
    let subprotocol: String?
    let extensions: [String]
    /// Seconds since the Unix epoch.
    let startedAt: Double
    /// How the client reached Sluice: `h1` (an HTTP/1.1 upgrade) or `h2` (RFC 8441).
    let clientProtocol: String

    init(
        id: UInt64, route: String, listener: String, client: String, user: String?, backend: String, subprotocol: String?,
        extensions: [String], startedAt: Double, clientProtocol: String = "h1"
    ) {
        self.id = id
        self.route = route
        self.listener = listener
        self.client = client
        self.user = user
        self.backend = backend
        self.subprotocol = subprotocol
        self.extensions = extensions
        self.startedAt = startedAt
        self.clientProtocol = clientProtocol
    }
}

/// Traffic read from one side.
struct TrafficCounters: Sendable, Equatable {
    var bytes: UInt64 = 0
    var frames: UInt64 = 0
    var messages: UInt64 = 0
    var pings: UInt64 = 0
    var pongs: UInt64 = 0
}

/// A connection's figures at one moment.
struct ConnectionSnapshot: Sendable {
    var info: ConnectionInfo
    var fromClient: TrafficCounters
    var fromBackend: TrafficCounters
    /// Seconds since the Unix epoch of the last frame either way.
    var lastActivity: Double
    /// `open`, `closing` or `closed`.
    var state: String
}
