import CoreMetrics
import NIOCore
import NIOHTTP2
import SluiceConfig

/// One client connection speaking HTTP/2: NIOHTTP2 with the listener's settings and defences
/// (stream count, header list size, windows, the reset, CONTINUATION and control-frame
/// limits), the connection manager (GOAWAY after `idle_timeout` without a stream, and a
/// graceful GOAWAY when the gateway drains or a reload changes the listener), and on each
/// stream the client opens a `HTTP2RequestCodec` and an `HTTP2StreamHandler`.
///
/// What the connection's streams share lives here, on the connection's event loop: the
/// listener's settings and routing view, and what admission reads of the connection. A
/// connection on Sluice's own layer (`HTTP2WireConnection`) shares the same object.
final class HTTP2Connection {
    let configuration: HTTPGatewayHandler.Configuration
    let services: GatewayServices
    /// The listener's routing, refreshed per stream when a reload replaced it.
    var routing: RoutingView
    /// The connection's facts for admission.
    let admission: Admission.Connection
    /// The peer's address as text, for the forwarding fields.
    let peerText: String?
    /// The forwarding fields of the connection's streams.
    var forwardingFields = HTTPWireFormat.ForwardingCache()
    /// The deadlines of the connection's streams, on one timer.
    let watchdog: HTTP2StreamWatchdog
    /// The requests counter the last answer on this connection counted in (its streams mostly
    /// repeat it: no lock and no label lookup per request, as on HTTP/1).
    private var lastRequestCounter: (route: String?, status: UInt, counter: CoreMetrics.Counter)?

    init(
        configuration: HTTPGatewayHandler.Configuration, services: GatewayServices, routing: ListenerRouting, peer: IPAddress?, eventLoop: any EventLoop
    ) {
        self.configuration = configuration
        watchdog = HTTP2StreamWatchdog(eventLoop: eventLoop)
        self.services = services
        self.routing = RoutingView(routing)
        admission = Admission.Connection(listener: configuration.listener, tls: configuration.tls, peer: peer, limits: configuration.limits, http2: true)
        peerText = peer?.description
    }

    /// Counts one answered request in `sluice_http_requests_total`.
    func countRequest(route: String?, status: UInt) {
        if let last = lastRequestCounter, last.status == status, last.route == route {
            last.counter.increment()
            return
        }
        let counter = services.metrics.httpRequestCounter(listener: configuration.listener, route: route, status: status)
        lastRequestCounter = (route, status, counter)
        counter.increment()
    }

    /// Sent down a connection's pipeline when a reload changed its listener's HTTP or TLS
    /// settings: an HTTP/2 connection answers with a graceful GOAWAY, so the client's next
    /// streams come on a connection with the new settings; its open streams, WebSockets
    /// included, go on.
    struct ListenerChanged: Sendable {}

    /// Installs HTTP/2 on a client channel whose protocol is settled (ALPN chose `h2`, or the
    /// client sent the h2c preface).
    static func install(
        on channel: any Channel, configuration: HTTPGatewayHandler.Configuration, limits: HTTP2Limits, routing: ListenerRouting, services: GatewayServices
    ) throws {
        let connection = HTTP2Connection(
            configuration: configuration, services: services, routing: routing, peer: configuration.peer, eventLoop: channel.eventLoop
        )
        let shared = NIOLoopBound(connection, eventLoop: channel.eventLoop)
        let manager = NIOHTTP2ServerConnectionManagementHandler(
            eventLoop: channel.eventLoop,
            configuration: .init(maxIdleTime: TimeAmount(limits.idleTimeout), maxAge: nil, maxGraceTime: nil, keepalive: nil)
        )
        let handler = NIOHTTP2Handler(
            mode: .server, eventLoop: channel.eventLoop,
            connectionConfiguration: connectionConfiguration(limits), streamConfiguration: streamConfiguration(limits),
            streamDelegate: manager.http2StreamDelegate
        ) { stream in
            stream.eventLoop.makeCompletedFuture {
                let sync = stream.pipeline.syncOperations
                try sync.addHandler(HTTP2RequestCodec())
                try sync.addHandler(HTTP2StreamHandler<ChannelHandlerContext>(connection: shared.value))
            }
        }
        let sync = channel.pipeline.syncOperations
        try sync.addHandler(HTTP2ConnectionEvents(connection: connection))
        let metrics = services.metrics
        try sync.addHandler(HTTP2GoAwayWatcher { code in metrics.http2ConnectionError(listener: configuration.listener, code: code) })
        try sync.addHandler(HTTP2FlushCoalescer())
        try sync.addHandler(handler)
        try sync.addHandler(manager)
        // The manager starts its idle timer on channelActive, which this channel had before
        // ALPN (or the h2c preface) installed it: without this, a client that never completes a
        // stream (silent, or a header block it never ends) would hold the connection for good.
        if channel.isActive { manager.channelActive(context: try sync.context(handler: manager)) }
    }

    static func connectionConfiguration(_ limits: HTTP2Limits) -> NIOHTTP2Handler.ConnectionConfiguration {
        var configuration = NIOHTTP2Handler.ConnectionConfiguration()
        configuration.initialSettings = [
            HTTP2Setting(parameter: .maxConcurrentStreams, value: limits.maxConcurrentStreams),
            HTTP2Setting(parameter: .maxHeaderListSize, value: limits.maxHeaderListSize),
            HTTP2Setting(parameter: .initialWindowSize, value: limits.initialWindowSize),
            HTTP2Setting(parameter: .maxFrameSize, value: limits.maxFrameSize),
            // RFC 8441: WebSockets by extended CONNECT.
            HTTP2Setting(parameter: .enableConnectProtocol, value: 1),
        ]
        configuration.targetWindowSize = limits.connectionWindowSize
        configuration.maximumSequentialContinuationFrames = limits.maxContinuationFrames
        configuration.controlFrameRateLimit.maximumCount = limits.maxControlFrames
        configuration.controlFrameRateLimit.windowLength = TimeAmount(limits.controlFrameWindow)
        return configuration
    }

    static func streamConfiguration(_ limits: HTTP2Limits) -> NIOHTTP2Handler.StreamConfiguration {
        var configuration = NIOHTTP2Handler.StreamConfiguration()
        configuration.targetWindowSize = limits.initialWindowSize
        configuration.streamResetFrameRateLimit.maximumCount = limits.maxResets
        configuration.streamResetFrameRateLimit.windowLength = TimeAmount(limits.resetWindow)
        return configuration
    }

    /// The routing for the next stream.
    func currentRouting() -> ListenerRouting.Snapshot {
        routing.refresh()
    }
}

/// The connection's own events: `HTTP2Connection.ListenerChanged` becomes the quiesce event
/// the connection manager answers with a graceful GOAWAY, and the close stops the streams'
/// watchdog.
private final class HTTP2ConnectionEvents: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = NIOAny

    private let connection: HTTP2Connection

    init(connection: HTTP2Connection) {
        self.connection = connection
    }

    func channelInactive(context: ChannelHandlerContext) {
        connection.watchdog.close()
        context.fireChannelInactive()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is HTTP2Connection.ListenerChanged {
            context.fireUserInboundEventTriggered(ChannelShouldQuiesceEvent())
        } else {
            context.fireUserInboundEventTriggered(event)
        }
    }
}
