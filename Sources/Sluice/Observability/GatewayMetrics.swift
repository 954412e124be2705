import CoreMetrics
import NIOConcurrencyHelpers
import Prometheus
import SluiceConfig

/// The gateway's metrics, through swift-metrics into a Prometheus registry of its own (one per
/// `Gateway`, so tests and reloads never share counters). Labels are per route and listener
/// only; per-connection figures live in the `ConnectionRegistry`.
///
/// Handles used on every connection are made once per route and listener, and those with labels
/// that vary per event (closes by code and ending, requests by status) are kept per label set
/// once made: a lookup in the Prometheus registry builds the handle and its label arrays anew.
/// Rare ones (rejections by limit, errors) are looked up by the registry, which deduplicates by
/// name and labels.
public final class GatewayMetrics: Sendable {
    public let registry: PrometheusCollectorRegistry
    let factory: PrometheusMetricsFactory
    private let routes = NIOLockedValueBox<[String: RouteMetrics]>([:])
    private let listeners = NIOLockedValueBox<[String: ListenerMetrics]>([:])
    private let process: ProcessMetrics

    public init() {
        let registry = PrometheusCollectorRegistry()
        var factory = PrometheusMetricsFactory(registry: registry)
        factory.durationHistogramBuckets["sluice_websocket_duration_seconds"] = [
            .seconds(1), .seconds(5), .seconds(15), .seconds(60), .seconds(300), .seconds(900), .seconds(3600), .seconds(14400), .seconds(86400),
        ]
        // Redis calls on a LAN or loopback and whole handshakes take about a millisecond; the finer
        // buckets say how far under or over.
        let fine: [Duration] = [
            .microseconds(100), .microseconds(250), .microseconds(500), .microseconds(750), .milliseconds(1), .microseconds(1500),
            .milliseconds(2), .milliseconds(3), .milliseconds(4), .milliseconds(5), .microseconds(7500), .milliseconds(10), .milliseconds(25),
            .milliseconds(50), .milliseconds(100), .milliseconds(500), .seconds(2),
        ]
        factory.durationHistogramBuckets["sluice_cluster_store_call_seconds"] = fine
        factory.durationHistogramBuckets["sluice_websocket_handshake_seconds"] = fine
        factory.defaultDurationHistogramBuckets = [
            .microseconds(250), .microseconds(500), .milliseconds(1), .milliseconds(2), .milliseconds(5), .milliseconds(10),
            .milliseconds(25), .milliseconds(50), .milliseconds(100), .milliseconds(250), .milliseconds(500), .seconds(1),
            .milliseconds(2500), .seconds(5), .seconds(10),
        ]
        self.registry = registry
        self.factory = factory
        self.process = ProcessMetrics(registry: registry)
    }

    /// The handles of one route, made on first use.
    func route(_ name: String) -> RouteMetrics {
        Self.held(in: routes, name) { RouteMetrics(route: name, factory: factory) }
    }

    /// The handles of one listener, made on first use.
    func listener(_ name: String) -> ListenerMetrics {
        Self.held(in: listeners, name) { ListenerMetrics(listener: name, factory: factory) }
    }

    /// The handle kept in `handles` under `key`, made by `make` the first time.
    private static func held<Key: Hashable, Handle>(in handles: NIOLockedValueBox<[Key: Handle]>, _ key: Key, make: () -> Handle) -> Handle {
        handles.withLockedValue { handles in
            if let existing = handles[key] { return existing }
            let made = make()
            handles[key] = made
            return made
        }
    }

    func counter(_ label: String, _ dimensions: [(String, String)]) -> CoreMetrics.Counter {
        CoreMetrics.Counter(label: label, dimensions: dimensions, factory: factory)
    }

    func meter(_ label: String, _ dimensions: [(String, String)]) -> CoreMetrics.Meter {
        CoreMetrics.Meter(label: label, dimensions: dimensions, factory: factory)
    }

    // MARK: Events

    func limitRejected(_ rejection: LimitRejection) {
        counter("sluice_limit_rejections_total", [("limit", rejection.label)]).increment()
    }

    /// An HTTP/2 connection ended by a GOAWAY with an error: `sluice_http2_connection_errors_total{listener,code}`
    /// (`PROTOCOL_ERROR`, `ENHANCE_YOUR_CALM`, …).
    func http2ConnectionError(listener: String, code: UInt32) {
        let names: [UInt32: String] = [
            0x1: "PROTOCOL_ERROR", 0x2: "INTERNAL_ERROR", 0x3: "FLOW_CONTROL_ERROR", 0x4: "SETTINGS_TIMEOUT", 0x5: "STREAM_CLOSED",
            0x6: "FRAME_SIZE_ERROR", 0x7: "REFUSED_STREAM", 0x8: "CANCEL", 0x9: "COMPRESSION_ERROR", 0xa: "CONNECT_ERROR",
            0xb: "ENHANCE_YOUR_CALM", 0xc: "INADEQUATE_SECURITY", 0xd: "HTTP_1_1_REQUIRED",
        ]
        counter("sluice_http2_connection_errors_total", [("listener", listener), ("code", names[code] ?? String(code))]).increment()
    }

    /// A connection refused at its PROXY protocol header: `sluice_proxy_protocol_errors_total{listener,reason}`
    /// (`untrusted_peer`, `invalid`, `timeout`, `truncated`).
    func proxyProtocolRefused(listener: String, reason: String) {
        counter("sluice_proxy_protocol_errors_total", [("listener", listener), ("reason", reason)]).increment()
    }

    func tlsHandshakeFailed(listener: String) {
        counter("sluice_tls_handshake_failures_total", [("listener", listener)]).increment()
    }

    /// Per request, so the counters are kept here rather than looked up in the registry each time.
    private let httpCounters = NIOLockedValueBox<[HTTPCounterKey: CoreMetrics.Counter]>([:])

    private struct HTTPCounterKey: Hashable {
        var listener: String
        var route: String?
        var status: UInt
    }

    /// The requests counter for one listener, route and status (connections keep the last one
    /// they used: most requests on a connection repeat it).
    func httpRequestCounter(listener: String, route: String?, status: UInt) -> CoreMetrics.Counter {
        Self.held(in: httpCounters, HTTPCounterKey(listener: listener, route: route, status: status)) {
            counter("sluice_http_requests_total", [("listener", listener), ("route", route ?? "none"), ("status", String(status))])
        }
    }

    /// An upgrade the backend accepted: `sluice_websocket_upgrades_total{result="ok"}`.
    func upgradeSucceeded(route: String) {
        counter("sluice_websocket_upgrades_total", [("route", route), ("result", "ok")]).increment()
    }

    /// An upgrade refused or failed, under its error's label.
    func upgradeFailed(route: String, _ error: SluiceError) {
        counter("sluice_websocket_upgrades_total", [("route", route), ("result", error.label.rawValue)]).increment()
    }

    /// A refused request or upgrade: the limit that refused it, if one did.
    func refused(_ error: SluiceError) {
        if let limit = error.limit { limitRejected(limit) }
    }

    /// One ended WebSocket: its close code (`none` when it ended without one), who ended it, and
    /// how (`WebSocketRelay.StateMachine.Ending`: `close_handshake`, `vanished_mid_frame`, …).
    func websocketClosed(route: String, code: UInt16?, initiator: String, ending: String) {
        Self.held(in: closeCounters, CloseKey(route: route, code: code, initiator: initiator, ending: ending)) {
            counter("sluice_websocket_closes_total", [("route", route), ("code", code.map(String.init) ?? "none"), ("initiator", initiator), ("ending", ending)])
        }.increment()
    }

    private let closeCounters = NIOLockedValueBox<[CloseKey: CoreMetrics.Counter]>([:])

    private struct CloseKey: Hashable {
        var route: String
        var code: UInt16?
        var initiator: String
        var ending: String
    }

    /// Sets the gauges of what the limits hold now: per route, the WebSockets counted and the
    /// addresses and users holding a count; gateway-wide, the TCP connections counted and the
    /// addresses holding one. Called at each scrape.
    func updateLimits(routes: [Route], connections: ConnectionLimiter?) {
        for route in routes {
            let counts = route.limiter.counts
            let labels = [("route", route.name)]
            registry.namedGauge("sluice_limit_websockets", labels: labels, help: "WebSockets counted against the route's limits.")
                .set(Int64(counts.websockets))
            registry.namedGauge("sluice_limit_tracked", labels: labels + [("key", "address")], help: "Client addresses and users holding a count on the route.")
                .set(Int64(counts.addresses))
            registry.namedGauge("sluice_limit_tracked", labels: labels + [("key", "user")], help: "Client addresses and users holding a count on the route.")
                .set(Int64(counts.users))
        }
        if let connections {
            registry.namedGauge("sluice_limit_connections", labels: [], help: "TCP connections counted against limits.max_connections.")
                .set(Int64(connections.total))
            registry.namedGauge("sluice_limit_connection_addresses", labels: [], help: "Client addresses holding a count against limits.max_connections_per_ip.")
                .set(Int64(connections.trackedAddresses))
        }
    }

    /// A Redis call of the cluster store that gave no usable answer:
    /// `sluice_cluster_store_errors_total{operation,reason}`.
    func clusterStoreError(operation: String, reason: String) {
        counter("sluice_cluster_store_errors_total", [("operation", operation), ("reason", reason)]).increment()
    }

    /// An upgrade or request decided by `on_store_failure` because Redis could not:
    /// `sluice_cluster_store_failure_decisions_total{policy}`.
    func clusterPolicyApplied(_ policy: ClusterConfiguration.StoreFailurePolicy) {
        counter("sluice_cluster_store_failure_decisions_total", [("policy", policy.rawValue)]).increment()
    }

    /// Whether the cluster store's connection to Redis is open: `sluice_cluster_store_up`.
    func clusterStoreUp(_ up: Bool) {
        registry.namedGauge("sluice_cluster_store_up", labels: [], help: "1 while the connection to the cluster's Redis is open.").set(Int64(up ? 1 : 0))
    }

    /// A reload's result: `sluice_config_reloads_total{result="success"|"failure"}`.
    func reloaded(success: Bool) {
        counter("sluice_config_reloads_total", [("result", success ? "success" : "failure")]).increment()
    }

    /// The configuration in force since `time` (seconds since the epoch): the time of the last
    /// successful load, and `sluice_config_info{version}` at 1 for it alone.
    func configurationLoaded(version: String, at time: Double) {
        registry.namedGauge("sluice_config_last_reload_success_timestamp_seconds", labels: [], help: "When the configuration in force was loaded.")
            .set(time)
        let previous = loadedVersion.withLockedValue { old in
            defer { old = version }
            return old
        }
        if let previous, previous != version {
            registry.namedGauge("sluice_config_info", labels: [("version", previous)], help: "The configuration in force, by version.").set(Int64(0))
        }
        registry.namedGauge("sluice_config_info", labels: [("version", version)], help: "The configuration in force, by version.").set(Int64(1))
    }

    private let loadedVersion = NIOLockedValueBox<String?>(nil)

    /// The Prometheus text exposition, with the process figures read now.
    public func render() -> [UInt8] {
        process.update()
        return MetricHelp.addingMissing(to: registry.emitToBuffer())
    }
}

/// One route's per-connection metric handles.
final class RouteMetrics: Sendable {
    let activeWebSockets: CoreMetrics.Meter
    let idleTimeouts: CoreMetrics.Counter
    let duration: CoreMetrics.Timer
    let connectTime: CoreMetrics.Timer
    let handshakeTime: CoreMetrics.Timer
    /// From the client's request head to the 101 (or RFC 8441's 200) it is sent: the handshake as
    /// the client sees it, admission (authentication, the cluster's lease) included.
    let clientHandshakeTime: CoreMetrics.Timer
    /// `sluice_websocket_upgrades_total{result="ok"}`, held rather than looked up per upgrade.
    let upgrades: CoreMetrics.Counter
    /// Plain HTTP: time from the request sent to the backend's response head.
    let responseTime: CoreMetrics.Timer
    /// Indexed by `RelaySide.index` of the side the traffic came from.
    let messages: [CoreMetrics.Counter]
    let frames: [CoreMetrics.Counter]
    let bytes: [CoreMetrics.Counter]

    init(route: String, factory: PrometheusMetricsFactory) {
        let labels = [("route", route)]
        activeWebSockets = CoreMetrics.Meter(label: "sluice_websockets_active", dimensions: labels, factory: factory)
        idleTimeouts = CoreMetrics.Counter(label: "sluice_websocket_idle_timeouts_total", dimensions: labels, factory: factory)
        duration = CoreMetrics.Timer(label: "sluice_websocket_duration_seconds", dimensions: labels, factory: factory)
        connectTime = CoreMetrics.Timer(label: "sluice_upstream_connect_seconds", dimensions: labels, factory: factory)
        handshakeTime = CoreMetrics.Timer(label: "sluice_upstream_handshake_seconds", dimensions: labels, factory: factory)
        clientHandshakeTime = CoreMetrics.Timer(label: "sluice_websocket_handshake_seconds", dimensions: labels, factory: factory)
        upgrades = CoreMetrics.Counter(label: "sluice_websocket_upgrades_total", dimensions: labels + [("result", "ok")], factory: factory)
        responseTime = CoreMetrics.Timer(label: "sluice_upstream_response_seconds", dimensions: labels, factory: factory)
        func byDirection(_ name: String) -> [CoreMetrics.Counter] {
            RelaySide.allCases.map { side in
                CoreMetrics.Counter(label: name, dimensions: [("route", route), ("direction", side.trafficDirection)], factory: factory)
            }
        }
        messages = byDirection("sluice_websocket_messages_total")
        frames = byDirection("sluice_websocket_frames_total")
        bytes = byDirection("sluice_websocket_bytes_total")
    }
}

/// One listener's per-connection metric handles.
final class ListenerMetrics: Sendable {
    /// `sluice_connections_accepted_total{listener}`.
    let accepted: CoreMetrics.Counter
    /// `sluice_http_connections_total{listener,version}`, by `HTTPProtocol`.
    private let http1Connections: CoreMetrics.Counter
    private let h2Connections: CoreMetrics.Counter

    init(listener: String, factory: PrometheusMetricsFactory) {
        accepted = CoreMetrics.Counter(label: "sluice_connections_accepted_total", dimensions: [("listener", listener)], factory: factory)
        func connections(_ version: HTTPProtocol) -> CoreMetrics.Counter {
            CoreMetrics.Counter(label: "sluice_http_connections_total", dimensions: [("listener", listener), ("version", version.rawValue)], factory: factory)
        }
        http1Connections = connections(.http1)
        h2Connections = connections(.h2)
    }

    /// A connection set up for an HTTP version.
    func connectionServed(_ version: HTTPProtocol) {
        switch version {
        case .http1: http1Connections.increment()
        case .h2: h2Connections.increment()
        }
    }
}

extension RelaySide {
    /// The `direction` label of traffic read from this side.
    var trafficDirection: String { self == .downstream ? "client_to_backend" : "backend_to_client" }
}

extension PrometheusCollectorRegistry {
    /// A gauge under its full name: the registry's descriptor joins its parts with underscores,
    /// and a name given whole is one part.
    func namedGauge(_ name: String, labels: [(String, String)], help: String) -> Prometheus.Gauge {
        makeGauge(descriptor: MetricNameDescriptor(metricName: name, unitName: "", helpText: help), labels: labels)
    }

    /// A counter under its full name (as `namedGauge`).
    func namedCounter(_ name: String, labels: [(String, String)], help: String) -> Prometheus.Counter {
        makeCounter(descriptor: MetricNameDescriptor(metricName: name, unitName: "", helpText: help), labels: labels)
    }
}
