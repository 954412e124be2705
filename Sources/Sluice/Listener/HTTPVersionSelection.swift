import NIOCore
import NIOSSL
import NIOTLS
import SluiceConfig

/// Sets up an accepted connection for the HTTP version it speaks: over TLS the one ALPN
/// settled (`h2` or `http/1.1`, offered as `http.versions` says; a client that offers neither
/// gets HTTP/1.1 if the listener serves it); on plain TCP HTTP/1.1, or, when the listener lists
/// `h2`, HTTP/2 with prior knowledge for a client that opens with the h2c preface.
enum HTTPVersionSelection {
    static func install(
        on channel: any Channel, settings: LiveListener.Settings, routing: ListenerRouting, services: GatewayServices, peer: IPAddress?
    ) throws {
        let configuration = settings.configuration
        let versions = configuration.httpVersions
        let gateway = HTTPGatewayHandler.Configuration(listener: configuration.name, tls: settings.tls != nil, limits: configuration.http, peer: peer)
        let metrics = services.metrics
        let listenerMetrics = metrics.listener(configuration.name)
        func serve(_ version: HTTPProtocol) throws {
            listenerMetrics.connectionServed(version)
            switch version {
            case .http1:
                try HTTPGatewayHandler.install(on: channel.pipeline.syncOperations, configuration: gateway, routing: routing, services: services)
            case .h2 where configuration.http2.engine == .wire:
                try HTTP2WireConnection.install(on: channel, configuration: gateway, limits: configuration.http2, routing: routing, services: services)
            case .h2:
                try HTTP2Connection.install(on: channel, configuration: gateway, limits: configuration.http2, routing: routing, services: services)
            }
        }
        let sync = channel.pipeline.syncOperations
        if let tls = settings.tls, let handshake = configuration.tls?.handshakeTimeout {
            try sync.addHandler(NIOSSLServerHandler(context: tls.context))
            try sync.addHandler(TLSHandshakeTimeoutHandler(timeout: TimeAmount(handshake)) {
                metrics.tlsHandshakeFailed(listener: configuration.name)
            })
            guard versions.contains(.h2) else {
                try serve(.http1)
                return
            }
            try sync.addHandler(ApplicationProtocolNegotiationHandler { result, channel in
                channel.eventLoop.makeCompletedFuture {
                    switch result {
                    case .negotiated(let name) where HTTPProtocol(rawValue: name).map(versions.contains) == true:
                        try serve(HTTPProtocol(rawValue: name)!)
                    case .fallback where versions.contains(.http1):
                        try serve(.http1)
                    default:
                        // Only h2 is served and the client did not offer it.
                        channel.close(promise: nil)
                    }
                }
            })
            return
        }
        guard versions.contains(.h2) else {
            try serve(.http1)
            return
        }
        try sync.addHandler(HTTP2PrefaceSniffer(timeout: TimeAmount(configuration.http.headerTimeout), allowsHTTP1: versions.contains(.http1)) { h2 in
            try serve(h2 ? .h2 : .http1)
        })
    }
}

/// On a plain listener that serves h2c, reads a new connection's first bytes: the HTTP/2
/// connection preface (RFC 9113 §3.4) makes it HTTP/2, anything else HTTP/1.1 (or a close, when
/// the listener serves only h2). The bytes read go on to the protocol chosen. A client that
/// sends nothing is closed after the listener's header timeout.
final class HTTP2PrefaceSniffer: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer

    static let preface = Array("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".utf8)

    private let timeout: TimeAmount
    private let allowsHTTP1: Bool
    private let choose: (Bool) throws -> Void
    private var buffered: ByteBuffer?
    private var timer = DeadlineTimer()

    /// - Parameter choose: installs HTTP/2 (`true`) or HTTP/1.1 after this handler.
    init(timeout: TimeAmount, allowsHTTP1: Bool, choose: @escaping (Bool) throws -> Void) {
        self.timeout = timeout
        self.allowsHTTP1 = allowsHTTP1
        self.choose = choose
    }

    func handlerAdded(context: ChannelHandlerContext) {
        let channel = context.channel
        timer.arm(context.eventLoop.now + timeout, on: context.eventLoop) { [self] in
            timer.fired()
            channel.close(promise: nil)
        }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        timer.cancel()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var bytes = unwrapInboundIn(data)
        if var earlier = buffered {
            earlier.writeBuffer(&bytes)
            bytes = earlier
        }
        let count = min(bytes.readableBytes, Self.preface.count)
        let matches = bytes.readableBytesView.prefix(count).elementsEqual(Self.preface.prefix(count))
        if matches && count < Self.preface.count {
            buffered = bytes
            return
        }
        buffered = nil
        guard matches || allowsHTTP1 else {
            context.close(promise: nil)
            return
        }
        do {
            try choose(matches)
        } catch {
            context.close(promise: nil)
            return
        }
        context.fireChannelRead(wrapInboundOut(bytes))
        context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
    }
}
