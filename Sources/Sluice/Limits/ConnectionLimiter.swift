import NIOConcurrencyHelpers
import SluiceConfig

/// The gateway-wide caps on open TCP connections, checked as each one is accepted and before
/// any TLS work. Counts are released when the channel closes, which happens exactly once.
final class ConnectionLimiter: Sendable {
    private struct State {
        var total = 0
        var perIP: [IPAddress: Int] = [:]
    }

    let limits: GlobalLimits
    private let state = NIOLockedValueBox(State())

    init(limits: GlobalLimits) { self.limits = limits }

    /// Counts the connection in, or names the limit that refuses it.
    func admit(_ ip: IPAddress?) -> LimitRejection? {
        state.withLockedValue { state in
            if let cap = limits.maxConnections, state.total >= cap { return .maxConnections }
            if let ip, let cap = limits.maxConnectionsPerIP {
                if state.perIP[ip, default: 0] >= cap { return .maxConnectionsPerIP }
                state.perIP[ip, default: 0] += 1
            }
            state.total += 1
            return nil
        }
    }

    func release(_ ip: IPAddress?) {
        state.withLockedValue { state in
            state.total -= 1
            if let ip, limits.maxConnectionsPerIP != nil, let count = state.perIP[ip] {
                if count <= 1 { state.perIP.removeValue(forKey: ip) } else { state.perIP[ip] = count - 1 }
            }
        }
    }

    var total: Int { state.withLockedValue { $0.total } }
    var trackedAddresses: Int { state.withLockedValue { $0.perIP.count } }
}
