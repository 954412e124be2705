/// One route: which requests it takes (host, path prefix) and where they go.
public struct RouteConfiguration: Sendable, Equatable {
    public var name: String
    /// Listener names this route serves; empty = every listener.
    public var listeners: [String] = []
    public var match: RouteMatch
    /// Where connections go; empty only for routes served by a built-in handler.
    public var backends: [BackendURL] = []
    /// Each backend's share in the balance (`backends: [{url: …, weight: 3}]`), 1 by default;
    /// as many as `backends`.
    public var weights: [Int] = []
    /// Active checks of the backends; `nil` = none (passive health only).
    public var health: HealthCheckConfiguration?
    /// How `wss://` backends are verified.
    public var backendTLS: BackendTLSConfiguration = BackendTLSConfiguration()
    /// Which `Host` header the backend receives.
    public var hostHeader: HostHeaderPolicy = .client
    /// A handler built into Sluice instead of backends (the demo page).
    public var builtin: BuiltinHandler?
    public var websocket: WebSocketRouteSettings = WebSocketRouteSettings()
    public var limits: RouteLimits = RouteLimits()
    public var auth: RouteAuthConfiguration = RouteAuthConfiguration()
    /// Plain HTTP proxying: timeouts, body limit, prefix stripping, the connection pool.
    public var http: HTTPProxySettings = HTTPProxySettings()
    /// How a backend is chosen, for plain requests and upgrades alike.
    public var balance: BalancingConfiguration = BalancingConfiguration()
    /// Whether the config said `auth:` at all (`auth: none` counts); `auth_policy: explicit`
    /// requires it of every route.
    public var authDeclared: Bool = false
    /// `nil` = any Origin.
    public var origin: OriginPolicy?

    public init(name: String, match: RouteMatch) {
        self.name = name
        self.match = match
    }
}

/// What a route matches on. `host == nil` matches any host.
public struct RouteMatch: Sendable, Equatable {
    /// Exact host (`example.com`) or wildcard (`*.example.com`), lower-cased, without port.
    public var host: String?
    /// Path prefix matched on segment boundaries, normalised (`/ws`, never `/ws/`), `/` for all.
    public var pathPrefix: String = "/"

    public init(host: String? = nil, pathPrefix: String = "/") {
        self.host = host
        self.pathPrefix = pathPrefix
    }
}

/// Handlers served by Sluice itself.
public enum BuiltinHandler: String, Sendable, Equatable, CaseIterable {
    /// A page that opens a WebSocket to `/echo` and shows the echoes.
    case demo
}

/// Which `Host` the backend sees.
public enum HostHeaderPolicy: String, Sendable, Equatable {
    /// The client's `Host`, as nginx's `proxy_set_header Host $host`.
    case client
    /// The backend URL's `host:port`.
    case backend
}

/// Verification of `wss://` backends.
public struct BackendTLSConfiguration: Sendable, Equatable {
    /// PEM bundle of trusted CAs (absolute path); `nil` = the system's trust store.
    public var caFile: String?
    /// Skip certificate verification. Must be written explicitly; never a default.
    public var insecureSkipVerify: Bool = false
    /// SNI and verification name; `nil` = the backend URL's host.
    public var serverName: String?

    public init() {}
}

/// The relay's per-route settings. `nil` durations mean "off".
public struct WebSocketRouteSettings: Sendable, Equatable {
    /// Subprotocols the client may ask for; the offer is narrowed to these. `nil` = any.
    public var subprotocols: [String]?
    /// Largest frame payload accepted from either side (close 1009 above it); unless set, no
    /// larger than `maxMessageSize`.
    public var maxFrameSize: Int = 64 << 20
    /// Largest message (sum of its frames) accepted from either side (close 1009 above it).
    public var maxMessageSize: Int = 64 << 20
    /// Bytes buffered per direction before the relay stops reading its source.
    public var bufferSize: Int = 64 << 10
    /// Re-mask client frames with fresh keys before they reach the backend.
    public var remask: Bool = false
    public var connectTimeout: Duration = .seconds(5)
    /// Time for the backend to answer the upgrade.
    public var handshakeTimeout: Duration = .seconds(10)
    /// No frame either way for this long closes both sides with 1001.
    public var idleTimeout: Duration? = .seconds(300)
    /// Time a peer has to answer a close frame before the TCP connection is dropped.
    public var closeTimeout: Duration = .seconds(5)
    /// Gateway-originated pings to both sides; `nil` = no pings.
    public var pingInterval: Duration?
    /// Added to `pingInterval`: a peer silent that long is treated as gone.
    public var pongTimeout: Duration = .seconds(10)
    /// Maximum life of one WebSocket; `nil` = unlimited.
    public var maxLifetime: Duration?
    /// Backends tried per connection when connects fail.
    public var maxConnectAttempts: Int = 3

    public init() {}
}

/// Plain HTTP requests to a route's backends.
public struct HTTPProxySettings: Sendable, Equatable {
    public var connectTimeout: Duration = .seconds(5)
    /// Time for the backend's response head after the request was sent.
    public var responseTimeout: Duration = .seconds(60)
    /// Longest pause in either body before the exchange is abandoned.
    public var idleTimeout: Duration = .seconds(60)
    /// Larger request bodies get a 413; `nil` = no limit (bodies stream, never buffered).
    public var maxRequestBody: Int?
    /// Remove the route's `path_prefix` before the backend sees the path.
    public var stripPrefix: Bool = false
    /// Replace the route's `path_prefix` with this one (`/api` → `/v2/api`, say).
    public var rewritePrefix: String?
    /// Idle pooled connections kept per backend and event loop.
    public var poolMaxIdle: Int = 16
    public var poolIdleTimeout: Duration = .seconds(30)

    public init() {}
}

/// Choosing a backend: the policy, stickiness, and passive health.
public struct BalancingConfiguration: Sendable, Equatable {
    public enum Policy: String, Sendable, Equatable {
        case roundRobin = "round_robin"
        case leastConnections = "least_connections"
    }

    public enum Sticky: Sendable, Equatable {
        case none
        /// Sluice sets a cookie naming the backend.
        case cookie(name: String)
        /// Rendezvous hashing of the client address: adding a backend moves few clients.
        case clientIP
    }

    /// What consistent hashing keys on, so one user's connections land on one backend.
    public enum HashKey: Sendable, Equatable {
        case header(String)
        case cookie(String)
        /// The authenticated user (falls back to the policy on public routes).
        case user
    }

    public var policy: Policy = .roundRobin
    public var sticky: Sticky = .none
    /// Consistent (rendezvous) hashing by a request field; excludes `sticky`.
    public var hash: HashKey?
    /// Failures in a row (connect failures, handshake timeouts, 5xx answers to upgrades, early
    /// 1011/1014 closes) after which a backend is ejected...
    public var maxFails: Int = 3
    /// ...for this long, doubled at each ejection that follows within `max_cool_down`...
    public var coolDown: Duration = .seconds(10)
    /// ...up to this long.
    public var maxCoolDown: Duration = .seconds(300)
    /// At most this share of a set is ejected by passive health at once (at least one backend).
    public var maxEjectionPercent: Int = 50
    /// A backend back from ejection or a failed check gets its share gradually over this long.
    public var slowStart: Duration = .zero
    /// 5xx answers to plain requests count as failures too.
    public var plainErrorsFail: Bool = false
    /// Idempotent requests without a body are tried on the next backend after a 502, 503 or 504.
    public var retryRequests: Bool = true
    /// No retry starts later than this after the first try.
    public var retryBudget: Duration = .seconds(10)

    public init() {}
}

/// Active checks of a route's backends: an HTTP GET, or a real WebSocket upgrade with a
/// ping/pong, every `interval`; `fall` failures in a row mark a backend down, `rise` passes up.
public struct HealthCheckConfiguration: Sendable, Equatable {
    public enum Mode: String, Sendable, Equatable {
        case http, websocket
    }

    public var path: String = "/"
    public var interval: Duration = .seconds(5)
    public var timeout: Duration = .seconds(1)
    public var rise: Int = 2
    public var fall: Int = 3
    /// Status ranges that pass an `http` check.
    public var expectStatus: [ClosedRange<Int>] = [200...399]
    public var mode: Mode = .http

    public init() {}
}

extension RouteConfiguration {
    /// A reload may keep this route's backend set (its balancing position and failure counts)
    /// for `other`: the same backends, balancing and backend TLS, and no TLS backend (whose
    /// trust files may have changed, so its context is built again).
    public func sharesBackendSet(with other: RouteConfiguration) -> Bool {
        backends == other.backends && weights == other.weights && health == other.health && balance == other.balance
            && backendTLS == other.backendTLS
            && !backends.contains { url in
                if case .remote(let scheme, _, _, _) = url.target { scheme.isSecure } else { false }
            }
    }
}
