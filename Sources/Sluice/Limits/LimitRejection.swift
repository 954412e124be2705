import NIOHTTP1

/// Why a limit refused a connection or an upgrade: the status the client gets, the
/// `Retry-After`, and the label operators see in metrics and the access log.
enum LimitRejection: Error, Equatable, Sendable {
    case maxConnections
    case maxConnectionsPerIP
    case maxWebSockets(retryAfter: Int)
    case maxWebSocketsPerIP(retryAfter: Int)
    case maxWebSocketsPerUser(retryAfter: Int)
    case upgradeRate(retryAfter: Int)
    case upgradeRatePerIP(retryAfter: Int)
    case requestRate(retryAfter: Int)
    case requestRatePerIP(retryAfter: Int)
    case upgradeRatePerUser(retryAfter: Int)
    case requestRatePerUser(retryAfter: Int)

    /// The `limit` label value.
    var label: String {
        switch self {
        case .maxConnections: "max_connections"
        case .maxConnectionsPerIP: "max_connections_per_ip"
        case .maxWebSockets: "max_websockets"
        case .maxWebSocketsPerIP: "max_websockets_per_ip"
        case .maxWebSocketsPerUser: "max_websockets_per_user"
        case .upgradeRate: "upgrade_rate"
        case .upgradeRatePerIP: "upgrade_rate_per_ip"
        case .requestRate: "request_rate"
        case .requestRatePerIP: "request_rate_per_ip"
        case .upgradeRatePerUser: "upgrade_rate_per_user"
        case .requestRatePerUser: "request_rate_per_user"
        }
    }

    /// A route at capacity is the server's state (503); a client over its share is told 429.
    var status: HTTPResponseStatus {
        switch self {
        case .maxWebSockets: .serviceUnavailable
        default: .tooManyRequests
        }
    }

    var retryAfter: Int {
        switch self {
        case .maxConnections, .maxConnectionsPerIP: 1
        case .maxWebSockets(let seconds), .maxWebSocketsPerIP(let seconds), .maxWebSocketsPerUser(let seconds),
            .upgradeRate(let seconds), .upgradeRatePerIP(let seconds), .requestRate(let seconds), .requestRatePerIP(let seconds),
            .upgradeRatePerUser(let seconds), .requestRatePerUser(let seconds):
            seconds
        }
    }

    /// The short body the client reads.
    var message: String {
        switch self {
        case .maxConnections: "too many connections"
        case .maxConnectionsPerIP: "too many connections from this address"
        case .maxWebSockets: "this route is at capacity; retry later"
        case .maxWebSocketsPerIP: "too many WebSockets from this address"
        case .maxWebSocketsPerUser: "too many WebSockets for this user"
        case .upgradeRate, .upgradeRatePerIP, .upgradeRatePerUser: "too many connection attempts; slow down"
        case .requestRate, .requestRatePerIP, .requestRatePerUser: "too many requests; slow down"
        }
    }
}
