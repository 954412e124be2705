import Logging
import NIOConcurrencyHelpers
import SluiceConfig

/// What every connection of one gateway shares, across reloads: the registry of live
/// WebSockets, the metrics, the access log, the connection caps and the backend pool. What a
/// configuration decides per listener (routes, trusted proxies) is in `ListenerRouting`.
final class GatewayServices: Sendable {
    let registry: ConnectionRegistry
    let metrics: GatewayMetrics
    let accessLog: AccessLog
    let connectionLimiter: ConnectionLimiter
    let logger: Logger
    /// Keep-alive connections to HTTP backends, shared by every listener.
    let pool = UpstreamPool()
    /// Limits and kicks shared with other instances (`cluster:`); set once, before listeners bind.
    var cluster: ClusterStore? { clusterStore.withLockedValue { $0 } }
    private let clusterStore = NIOLockedValueBox<ClusterStore?>(nil)

    func setCluster(_ store: ClusterStore?) {
        clusterStore.withLockedValue { $0 = store }
    }

    init(registry: ConnectionRegistry, metrics: GatewayMetrics, accessLog: AccessLog, limits: GlobalLimits, logger: Logger) {
        self.registry = registry
        self.metrics = metrics
        self.accessLog = accessLog
        self.connectionLimiter = ConnectionLimiter(limits: limits)
        self.logger = logger
    }
}
