import SluiceConfig

/// The routes every probe runs through: `/api` (HTTP) first, so routing is a real choice, then
/// `/ws` (WebSocket, Origin-checked, a per-address cap the probes never reach).
enum ProbeRoutes {
    /// With the metric handles the gateway gives each route, when `metrics` is given.
    static func make(dialer: (any BackendDialer)? = nil, metrics: GatewayMetrics? = nil) throws -> [Route] {
        var api = RouteConfiguration(name: "api", match: RouteMatch(pathPrefix: "/api"))
        api.backends = [try BackendURL.parse("http://127.0.0.1:9")]
        var ws = RouteConfiguration(name: "ws", match: RouteMatch(pathPrefix: "/ws"))
        ws.backends = [try BackendURL.parse("ws://127.0.0.1:9")]
        ws.origin = OriginPolicy(allowed: ["https://app.test"])
        ws.limits.maxWebSocketsPerIP = 100
        return [
            Route(configuration: api, backends: try BackendSet.make(for: api, routeIndex: 0, builtinPorts: [:], dialer: dialer), metrics: metrics?.route("api")),
            Route(configuration: ws, backends: try BackendSet.make(for: ws, routeIndex: 1, builtinPorts: [:], dialer: dialer), metrics: metrics?.route("ws")),
        ]
    }
}
