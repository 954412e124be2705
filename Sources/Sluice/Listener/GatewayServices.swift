import Logging
import SluiceConfig

/// What every connection of one gateway shares: the registry of live WebSockets, the metrics,
/// the access log, the connection caps and the proxies whose forwarding headers are believed.
final class GatewayServices: Sendable {
    let registry: ConnectionRegistry
    let metrics: GatewayMetrics
    let accessLog: AccessLog?
    let connectionLimiter: ConnectionLimiter
    let trustedProxies: [CIDR]
    let logger: Logger
    /// Keep-alive connections to HTTP backends, shared by every listener.
    let pool = UpstreamPool()

    init(registry: ConnectionRegistry, metrics: GatewayMetrics, accessLog: AccessLog?, limits: GlobalLimits, logger: Logger) {
        self.registry = registry
        self.metrics = metrics
        self.accessLog = accessLog
        self.connectionLimiter = ConnectionLimiter(limits: limits)
        self.trustedProxies = limits.trustedProxies
        self.logger = logger
    }
}
