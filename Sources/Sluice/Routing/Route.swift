import NIOCore
import SluiceConfig

/// A route as the gateway runs it: its configuration, its backends, and its timeouts as NIO
/// time amounts. Built once per configuration; live connections keep the `Route` they were
/// admitted under. A reload builds new ones, handing over what must outlive it: the route's
/// limiter (live counts, rate buckets) and, when its backends are unchanged, its backend set
/// (balancing position, failure counts).
final class Route: Sendable {
    let configuration: RouteConfiguration
    /// `nil` for routes served by a built-in handler.
    let backends: BackendSet?
    /// Counts every live WebSocket of the route (capped or not) and holds its rate buckets.
    let limiter: RouteLimiter
    let metrics: RouteMetrics?
    /// `nil` for public routes.
    let authenticator: RouteAuthenticator?
    /// Identity headers of every route (lower-cased): removed from what any client sends, so
    /// no one can pose as a user by sending them.
    let identityHeaders: Set<String>
    /// Which client fields a backend receives (plain requests and upgrades alike).
    let upstreamFields: UpstreamFields
    /// Query parameters that carry tokens on this route; removed before the backend.
    let credentialQueryParameters: [String]
    /// The plain-HTTP timeouts and pool limits, converted once rather than per request.
    let proxyTimes: ProxyTimes
    /// The relay's settings, made once: each WebSocket refers to one of them.
    private let relayConfigurations: (plain: WebSocketRelay.Configuration, deflate: WebSocketRelay.Configuration)

    /// `HTTPProxySettings`' durations as NIO time amounts, and the pool's limits.
    struct ProxyTimes: Sendable {
        let response: TimeAmount
        let idle: TimeAmount
        let pool: PoolSettings

        init(_ settings: HTTPProxySettings) {
            response = TimeAmount(settings.responseTimeout)
            idle = TimeAmount(settings.idleTimeout)
            pool = PoolSettings(
                maxIdle: settings.poolMaxIdle, idleTimeout: settings.poolIdleTimeout.nanoseconds,
                connectTimeout: TimeAmount(settings.connectTimeout)
            )
        }
    }

    var name: String { configuration.name }
    /// Plain requests are proxied (some backend is http:// or https://); otherwise a plain
    /// request to a WebSocket route is a 426.
    let servesHTTP: Bool
    var websocket: WebSocketRouteSettings { configuration.websocket }

    init(
        configuration: RouteConfiguration, backends: BackendSet?, metrics: RouteMetrics? = nil,
        authenticator: RouteAuthenticator? = nil, identityHeaders: Set<String> = ["x-sluice-user"], limiter: RouteLimiter? = nil
    ) {
        self.configuration = configuration
        self.backends = backends
        if let limiter {
            limiter.update(configuration.limits)
            self.limiter = limiter
        } else {
            self.limiter = RouteLimiter(limits: configuration.limits)
        }
        self.metrics = metrics
        self.authenticator = authenticator
        self.identityHeaders = identityHeaders
        self.upstreamFields = UpstreamFields(auth: configuration.auth, identityHeaders: identityHeaders)
        self.servesHTTP = configuration.backends.contains { url in
            if case .remote(let scheme, _, _, _) = url.target { scheme == .http || scheme == .https } else { false }
        }
        self.proxyTimes = ProxyTimes(configuration.http)
        self.relayConfigurations = (
            Self.makeRelayConfiguration(configuration, perMessageDeflate: false), Self.makeRelayConfiguration(configuration, perMessageDeflate: true)
        )
        self.credentialQueryParameters = configuration.auth.methods.compactMap { method in
            if case .jwt(let jwt) = method { jwt.queryParameter } else { nil }
        }
    }

    /// The target a backend receives for `path`: normalised, the prefix stripped or rewritten
    /// (plain requests, when the route asks), token query parameters removed. Forward auth is
    /// shown the same.
    func upstreamTarget(for path: RequestPath, upgrade: Bool) -> String {
        var target = upgrade ? path.target : PathPrefix.rewrite(path.target, matched: configuration.match.pathPrefix, settings: configuration.http)
        for parameter in credentialQueryParameters { target = QueryString.removing(parameter, from: target) }
        return target
    }

    /// The relay's settings on this route, with and without permessage-deflate.
    func relayConfiguration(perMessageDeflate: Bool) -> WebSocketRelay.Configuration {
        perMessageDeflate ? relayConfigurations.deflate : relayConfigurations.plain
    }

    private static func makeRelayConfiguration(_ configuration: RouteConfiguration, perMessageDeflate: Bool) -> WebSocketRelay.Configuration {
        let settings = configuration.websocket
        return WebSocketRelay.Configuration(
            route: configuration.name,
            perMessageDeflate: perMessageDeflate,
            remask: settings.remask,
            maxFrameSize: settings.maxFrameSize,
            maxMessageSize: settings.maxMessageSize,
            bufferSize: settings.bufferSize,
            timing: .init(
                closeTimeout: TimeAmount(settings.closeTimeout),
                idleTimeout: settings.idleTimeout.map(TimeAmount.init),
                pingInterval: settings.pingInterval.map(TimeAmount.init),
                pongTimeout: TimeAmount(settings.pongTimeout),
                maxLifetime: settings.maxLifetime.map(TimeAmount.init)
            )
        )
    }
}

/// The routing table of one listener, with routes resolved to `Route`s.
struct RouteTable: Sendable {
    private let router: Router
    /// The routes in the order the router was given their configurations.
    private let routes: [Route]

    init(routes: [Route], listener: String) {
        router = Router(routes: routes.map(\.configuration), listener: listener)
        self.routes = routes
    }

    func route(host: String?, path: String) -> Route? {
        router.index(host: host, path: path).map { routes[$0] }
    }
}
