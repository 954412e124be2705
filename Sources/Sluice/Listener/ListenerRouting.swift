import NIOConcurrencyHelpers
import SluiceConfig
import Synchronization

/// What a listener's requests are routed by: its routing table and the proxies whose forwarding
/// headers are believed. A reload replaces it whole; a kept-alive connection reads it at each
/// request, through a version number, so a request costs one atomic load unless it changed.
final class ListenerRouting: Sendable {
    /// One configuration's routing for the listener.
    struct Snapshot: Sendable {
        var routes: RouteTable
        var trustedProxies: [CIDR]
    }

    private let snapshot: NIOLockedValueBox<Snapshot>
    private let versionValue = Atomic<UInt64>(1)

    init(_ snapshot: Snapshot) {
        self.snapshot = NIOLockedValueBox(snapshot)
    }

    /// Changes each time `replace` does.
    var version: UInt64 { versionValue.load(ordering: .acquiring) }

    var current: Snapshot { snapshot.withLockedValue { $0 } }

    func replace(_ new: Snapshot) {
        snapshot.withLockedValue { $0 = new }
        versionValue.add(1, ordering: .releasing)
    }
}

/// A connection's view of its listener's routing, refreshed when the version moves.
struct RoutingView {
    let source: ListenerRouting
    private var version: UInt64
    private(set) var snapshot: ListenerRouting.Snapshot

    init(_ source: ListenerRouting) {
        self.source = source
        version = source.version
        snapshot = source.current
    }

    /// The routing to use for the next request.
    mutating func refresh() -> ListenerRouting.Snapshot {
        let now = source.version
        if now != version {
            version = now
            snapshot = source.current
        }
        return snapshot
    }
}
