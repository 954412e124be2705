import NIOConcurrencyHelpers
import NIOCore
import Synchronization

/// The live relayed WebSockets, so that shutdown (and the admin listener) can reach each one.
///
/// Registration happens once per connection, not per frame; each entry's close action runs on
/// the connection's own event loop.
public final class ConnectionRegistry: Sendable {
    struct Entry: Sendable {
        var route: String
        var eventLoop: any EventLoop
        var close: @Sendable (UInt16, String) -> Void
    }

    private let entries = NIOLockedValueBox<[UInt64: Entry]>([:])
    private let nextID = Atomic<UInt64>(0)

    public init() {}

    func register(route: String, eventLoop: any EventLoop, close: @escaping @Sendable (UInt16, String) -> Void) -> UInt64 {
        let id = nextID.add(1, ordering: .relaxed).newValue
        entries.withLockedValue { $0[id] = Entry(route: route, eventLoop: eventLoop, close: close) }
        return id
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
            entry.eventLoop.execute { entry.close(code, reason) }
        }
    }
}
