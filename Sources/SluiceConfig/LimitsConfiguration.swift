/// Limits that apply to the whole gateway, before any route is known.
public struct GlobalLimits: Sendable, Equatable {
    /// TCP connections open at once across all listeners; past it new ones are closed unread.
    public var maxConnections: Int?
    /// TCP connections open at once from one client address.
    public var maxConnectionsPerIP: Int?
    /// Peers whose `X-Forwarded-For` is believed; empty = nobody's (the default).
    public var trustedProxies: [CIDR] = []

    public init(maxConnections: Int? = nil, maxConnectionsPerIP: Int? = nil, trustedProxies: [CIDR] = []) {
        self.maxConnections = maxConnections
        self.maxConnectionsPerIP = maxConnectionsPerIP
        self.trustedProxies = trustedProxies
    }
}

/// A route's caps on WebSockets and on the rate of upgrades.
public struct RouteLimits: Sendable, Equatable {
    /// Live WebSockets on the route (503 past it).
    public var maxWebSockets: Int?
    /// Live WebSockets on the route from one client address (429 past it).
    public var maxWebSocketsPerIP: Int?
    /// Live WebSockets on the route for one authenticated user (429 past it).
    public var maxWebSocketsPerUser: Int?
    /// Upgrades per second on the whole route (429 past it).
    public var upgradeRate: RateLimit?
    /// Upgrades per second from one client address (429 past it).
    public var upgradeRatePerIP: RateLimit?
    /// Plain HTTP requests per second on the whole route (429 past it).
    public var requestRate: RateLimit?
    /// Plain HTTP requests per second from one client address (429 past it).
    public var requestRatePerIP: RateLimit?
    /// Upgrades per second by one authenticated user (429 past it).
    public var upgradeRatePerUser: RateLimit?
    /// Plain HTTP requests per second by one authenticated user (429 past it).
    public var requestRatePerUser: RateLimit?
    /// The `Retry-After` sent with 503s and with 429s for connection caps.
    public var retryAfter: Duration = .seconds(5)

    public init() {}

    public var isEmpty: Bool {
        maxWebSockets == nil && maxWebSocketsPerIP == nil && maxWebSocketsPerUser == nil && upgradeRate == nil && upgradeRatePerIP == nil
            && requestRate == nil && requestRatePerIP == nil && upgradeRatePerUser == nil && requestRatePerUser == nil
    }
}

/// A token bucket's settings: `rate` tokens a second refill it up to `burst`.
public struct RateLimit: Sendable, Equatable {
    public var perSecond: Double
    public var burst: Int

    public init(perSecond: Double, burst: Int) {
        self.perSecond = perSecond
        self.burst = burst
    }

    /// `20/s`, `600/m`, `1000/h`.
    public static func parseRate(_ text: String) -> Double? {
        let parts = text.trimmingSpaces().split(separator: "/")
        guard parts.count == 2, let count = Int(parts[0]), count > 0, count <= 10_000_000 else { return nil }
        switch parts[1] {
        case "s": return Double(count)
        case "m": return Double(count) / 60
        case "h": return Double(count) / 3600
        default: return nil
        }
    }
}

/// Where the access log goes.
public enum AccessLogDestination: Sendable, Equatable {
    case off
    case stdout
    case stderr
    /// An absolute path, appended to.
    case file(String)
}
