/// Several Sluice instances sharing their WebSocket caps, rate limits and kicks through one
/// Redis server (the `cluster:` block). Absent, every limit is the instance's own.
public struct ClusterConfiguration: Sendable, Equatable {
    /// What an upgrade or request meets while Redis cannot answer in time.
    public enum StoreFailurePolicy: String, Sendable, Equatable {
        /// Admitted on the instance's own limits alone (counted, and reconciled later).
        case allow
        /// Refused with 503.
        case deny
    }

    public var redis: RedisAddress
    /// The Redis password (and the user, when the URL names one), read from this file.
    public var passwordFile: String?
    /// A CA bundle for `rediss://`; the system's roots without one.
    public var caFile: String?
    /// This instance's name in the cluster: its leases and its entries in the cluster view.
    public var instanceID: String
    public var onStoreFailure: StoreFailurePolicy = .allow
    /// How long a lease outlives its instance's last heartbeat (heartbeats every third of it).
    public var leaseTTL: Duration = .seconds(30)
    /// The bound on each Redis call.
    public var timeout: Duration = .milliseconds(50)
    /// Prepended to every Redis key and channel, so several clusters can share one server.
    public var keyPrefix: String = "sluice"

    public init(redis: RedisAddress, instanceID: String) {
        self.redis = redis
        self.instanceID = instanceID
    }
}

/// `redis://[user[:password]@]host[:port][/database]`, or `rediss://` for TLS.
public struct RedisAddress: Sendable, Equatable, CustomStringConvertible {
    public var host: String
    public var port: Int = 6379
    public var database: Int = 0
    public var tls = false
    public var username: String?
    public var password: String?

    /// What is wrong with a URL.
    public struct Invalid: Error, Equatable {
        public var message: String
    }

    /// Parses the URL, or says what is wrong with it.
    public static func parse(_ text: String) -> Result<RedisAddress, Invalid> {
        func failure(_ message: String) -> Result<RedisAddress, Invalid> { .failure(Invalid(message: message)) }
        var rest = Substring(text)
        var address = RedisAddress(host: "")
        if rest.hasPrefix("redis://") {
            rest = rest.dropFirst(8)
        } else if rest.hasPrefix("rediss://") {
            rest = rest.dropFirst(9)
            address.tls = true
        } else {
            return failure("must start with redis:// or rediss://, got '\(text)'")
        }
        if let at = rest.lastIndex(of: "@") {
            let credentials = rest[..<at]
            rest = rest[rest.index(after: at)...]
            let parts = credentials.split(separator: ":", maxSplits: 1, omittingEmptySubsequences: false)
            if parts.count == 2 {
                address.username = parts[0].isEmpty ? nil : String(parts[0])
                address.password = String(parts[1])
            } else {
                address.password = String(credentials)
            }
        }
        var hostPort = rest
        if let slash = rest.firstIndex(of: "/") {
            hostPort = rest[..<slash]
            let database = rest[rest.index(after: slash)...]
            if !database.isEmpty {
                guard let number = Int(database), (0...1_000).contains(number) else {
                    return failure("database '\(database)' is not a number from 0 to 1000")
                }
                address.database = number
            }
        }
        if hostPort.hasPrefix("[") {
            guard let close = hostPort.firstIndex(of: "]") else { return failure("unclosed '[' in the host") }
            address.host = String(hostPort[hostPort.index(after: hostPort.startIndex)..<close])
            hostPort = hostPort[hostPort.index(after: close)...]
            if !hostPort.isEmpty {
                guard hostPort.hasPrefix(":") else { return failure("junk after the host") }
                hostPort = hostPort.dropFirst()
                guard let port = Int(hostPort), (1...65_535).contains(port) else { return failure("port '\(hostPort)' is not 1 to 65535") }
                address.port = port
            }
        } else {
            let parts = hostPort.split(separator: ":", omittingEmptySubsequences: false)
            guard parts.count <= 2 else { return failure("write an IPv6 host in brackets") }
            address.host = String(parts[0])
            if parts.count == 2 {
                guard let port = Int(parts[1]), (1...65_535).contains(port) else { return failure("port '\(parts[1])' is not 1 to 65535") }
                address.port = port
            }
        }
        guard !address.host.isEmpty else { return failure("no host in '\(text)'") }
        return .success(address)
    }

    /// The URL without its password.
    public var description: String {
        let user = username.map { "\($0)@" } ?? (password != nil ? "***@" : "")
        let host = self.host.contains(":") ? "[\(self.host)]" : self.host
        return "\(tls ? "rediss" : "redis")://\(user)\(host):\(port)/\(database)"
    }
}
