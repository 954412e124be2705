import NIOConcurrencyHelpers
import SluiceConfig

/// The gateway-wide caps on open TCP connections, checked as each one is accepted and before
/// any TLS work. Counts are released when the channel closes, which happens exactly once, and
/// survive a reload that changes the caps (every address is counted, capped or not).
final class ConnectionLimiter: Sendable {
    private struct State {
        var limits: GlobalLimits
        var total = 0
        var perIP: [IPAddress: Int] = [:]
    }

    private let state: NIOLockedValueBox<State>

    init(limits: GlobalLimits) { state = NIOLockedValueBox(State(limits: limits)) }

    /// New caps from a reload; the counts stay.
    func update(_ limits: GlobalLimits) {
        state.withLockedValue { $0.limits = limits }
    }

    /// Counts the connection in, or names the limit that refuses it.
    func admit(_ ip: IPAddress?) -> LimitRejection? {
        state.withLockedValue { state in
            if let cap = state.limits.maxConnections, state.total >= cap { return .maxConnections }
            if let ip {
                if let cap = state.limits.maxConnectionsPerIP, state.perIP[ip, default: 0] >= cap { return .maxConnectionsPerIP }
                state.perIP[ip, default: 0] += 1
            }
            state.total += 1
            return nil
        }
    }

    func release(_ ip: IPAddress?) {
        state.withLockedValue { state in
            state.total -= 1
            if let ip, let count = state.perIP[ip] {
                if count <= 1 { state.perIP.removeValue(forKey: ip) } else { state.perIP[ip] = count - 1 }
            }
        }
    }

    var total: Int { state.withLockedValue { $0.total } }
    var trackedAddresses: Int { state.withLockedValue { $0.perIP.count } }
}
