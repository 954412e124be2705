import Logging
import NIOCore
import NIOEmbedded
import SluiceConfig

/// The gateway's HTTP side on embedded channels, its backends dialed by an `EmbeddedDialer`:
/// a whole WebSocket (upgrade, one message each way, close handshake) or one proxied request
/// (over HTTP/1.1, or on a stream of an HTTP/2 connection) per call, through the same handlers,
/// admission, registry, metrics and access log as a socket would meet. The cost benchmarks
/// count what each allocates; every call checks that the gateway did what the scenario
/// expects, so a count never describes a path that failed early.
package final class GatewayProbe {
    private let loop = EmbeddedEventLoop()
    private let dialer: EmbeddedDialer
    private let routing: ListenerRouting
    private let services: GatewayServices
    private let configuration: HTTPGatewayHandler.Configuration
    private let upgrade: ByteBuffer
    private let accepted: ByteBuffer
    private let clientMessage: ByteBuffer
    private let backendMessage: ByteBuffer
    private let clientClose: ByteBuffer
    private let backendClose: ByteBuffer
    private let request: ByteBuffer
    private let closingRequest: ByteBuffer
    private let response: ByteBuffer
    /// The kept-alive client connection that `proxyRequest()` sends on, and its pooled backend.
    private var requestClient: EmbeddedChannel?
    private var requestBackend: EmbeddedChannel?
    /// The HTTP/2 client connection that `http2Request()` opens streams on, and its last stream.
    private var http2Client: EmbeddedChannel?
    private var http2Stream: UInt32 = 1
    /// The GET sent on every stream (its stream id set each time) and the answer's bytes,
    /// kept so that the probe's own buffers allocate nothing per request.
    private var http2Get = ProbeHTTP2Frames.get("/api/items?page=2", authority: "app.test", stream: 1)
    private var http2Answer = ByteBuffer()

    /// The `ProbeRoutes`, their backends dialed by an `EmbeddedDialer`; `accessLog` says where
    /// the access log goes (`/dev/null` counts building and writing its lines).
    package init(accessLog destination: AccessLogDestination = .off) throws {
        dialer = EmbeddedDialer(loop: loop)
        let metrics = GatewayMetrics()
        let routes = try ProbeRoutes.make(dialer: dialer, metrics: metrics)
        routing = ListenerRouting(.init(routes: RouteTable(routes: routes, listener: "probe"), trustedProxies: []))
        let accessLog = AccessLog()
        try accessLog.point(to: destination)
        services = GatewayServices(
            registry: ConnectionRegistry(), metrics: metrics, accessLog: accessLog, limits: GlobalLimits(), logger: Logger(label: "probe")
        )
        configuration = .init(listener: "probe", tls: false, limits: HTTPLimits(), peer: IPAddress("192.0.2.1"))
        let key = "dGhlIHNhbXBsZSBub25jZQ=="
        upgrade = ByteBuffer(string: """
            GET /ws/chat HTTP/1.1\r\nHost: app.test\r\nOrigin: https://app.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
            Sec-WebSocket-Key: \(key)\r\nSec-WebSocket-Version: 13\r\nUser-Agent: probe\r\n\r\n
            """)
        accepted = ByteBuffer(string: """
            HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: \(WebSocketKey.accept(for: key))\r\n\r\n
            """)
        let payload = [UInt8](repeating: 0x2a, count: 64)
        clientMessage = ProbeFrames.client(opcode: FrameHeader.Opcode.binary, payload)
        backendMessage = ProbeFrames.backend(opcode: FrameHeader.Opcode.binary, payload)
        clientClose = ProbeFrames.client(opcode: FrameHeader.Opcode.close, ProbeFrames.closePayload(1000))
        backendClose = ProbeFrames.backend(opcode: FrameHeader.Opcode.close, ProbeFrames.closePayload(1000))
        request = ByteBuffer(string: "GET /api/items?page=2 HTTP/1.1\r\nHost: app.test\r\nUser-Agent: probe\r\nAccept: */*\r\n\r\n")
        closingRequest = ByteBuffer(string: "GET /api/items?page=2 HTTP/1.1\r\nHost: app.test\r\nUser-Agent: probe\r\nConnection: close\r\n\r\n")
        response = ByteBuffer(string: "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok")
    }

    private func connectClient() throws -> EmbeddedChannel {
        let client = EmbeddedChannel(loop: loop)
        try HTTPGatewayHandler.install(on: client.pipeline.syncOperations, configuration: configuration, routing: routing, services: services)
        client.connect(to: try SocketAddress(ipAddress: "192.0.2.1", port: 50000), promise: nil)
        return client
    }

    /// One WebSocket from the client's connect to both connections closed: the upgrade through
    /// admission to the backend's 101, a 64-byte message each way, the close handshake.
    package func webSocketLifetime() throws {
        let client = try connectClient()
        try client.writeInbound(upgrade)
        loop.run()
        guard let backend = dialer.takeDialed() else { throw ProbeFailure("the upgrade dialed no backend: \(try client.drainOutbound()) bytes answered") }
        try backend.drainOutbound()
        try backend.writeInbound(accepted)
        // The handshake's codecs leave both pipelines in tasks of their own; then the relay starts.
        loop.run()
        let answered = try client.drainOutbound()
        guard services.registry.count == 1 else { throw ProbeFailure("no WebSocket registered after a \(answered)-byte answer") }
        try client.writeInbound(clientMessage)
        guard try backend.drainOutbound() == clientMessage.readableBytes else { throw ProbeFailure("the client's message did not reach the backend") }
        try backend.writeInbound(backendMessage)
        guard try client.drainOutbound() == backendMessage.readableBytes else { throw ProbeFailure("the backend's message did not reach the client") }
        try client.writeInbound(clientClose)
        try backend.drainOutbound()
        try backend.writeInbound(backendClose)
        try client.drainOutbound()
        // The backend ends its TCP connection after the close handshake, the client after Sluice's.
        backend.close(promise: nil)
        loop.run()
        if client.isActive { client.close(promise: nil) }
        loop.run()
        guard services.registry.count == 0, !backend.isActive, !client.isActive else {
            throw ProbeFailure("after the close handshake: \(services.registry.count) registered, backend open \(backend.isActive), client open \(client.isActive)")
        }
        // Time passes, as on a real loop: what is still due for this WebSocket (the end of its
        // backend's early-close window) comes, rather than piling up in the embedded loop.
        loop.advanceTime(by: .seconds(60))
    }

    /// One proxied GET on a kept-alive client connection to a pooled backend connection (the
    /// first call opens both).
    package func proxyRequest() throws {
        let client = try requestClient ?? connectClient()
        requestClient = client
        let answered = try proxy(request, from: client)
        guard client.isActive else { throw ProbeFailure("the client connection closed after a \(answered)-byte answer") }
    }

    /// One proxied GET on a client connection of its own (`Connection: close`, as from a client
    /// that does not keep connections alive) to a pooled backend connection: the client's
    /// connection from its connect to its close after the answer.
    package func proxyRequestOnNewConnection() throws {
        let client = try connectClient()
        let answered = try proxy(closingRequest, from: client)
        guard !client.isActive, requestBackend?.isActive == true else {
            throw ProbeFailure("after a \(answered)-byte answer: client open \(client.isActive), backend open \(requestBackend?.isActive == true)")
        }
    }

    /// One proxied GET on a new stream of a kept HTTP/2 client connection (h2c with prior
    /// knowledge; the first call opens it) to a pooled backend connection: the stream (a child
    /// channel on NIOHTTP2; a channel-less stream on Sluice's own layer, `engine: .wire`),
    /// admission, the exchange, the answer's HEADERS and DATA. One engine per probe.
    package func http2Request(engine: HTTP2Limits.HTTP2Engine = .nio) throws {
        let client: EmbeddedChannel
        if let open = http2Client {
            client = open
            http2Stream += 2
        } else {
            client = EmbeddedChannel(loop: loop)
            switch engine {
            case .nio:
                try HTTP2Connection.install(on: client, configuration: configuration, limits: HTTP2Limits(), routing: routing, services: services)
            case .wire:
                try HTTP2WireConnection.install(on: client, configuration: configuration, limits: HTTP2Limits(), routing: routing, services: services)
            }
            client.connect(to: try SocketAddress(ipAddress: "192.0.2.1", port: 50001), promise: nil)
            try client.writeInbound(ProbeHTTP2Frames.preface())
            loop.run()
            try client.drainOutbound()
            http2Client = client
        }
        ProbeHTTP2Frames.setStream(http2Stream, of: &http2Get)
        try forward(http2Get, from: client)
        http2Answer.clear()
        while let data = try client.readOutbound(as: IOData.self) {
            guard case .byteBuffer(let bytes) = data else { throw ProbeFailure("a file region on an HTTP/2 connection") }
            http2Answer.writeImmutableBuffer(bytes)
        }
        guard client.isActive, ProbeHTTP2Frames.answers(http2Stream, in: http2Answer) else {
            throw ProbeFailure("stream \(http2Stream) was not answered (\(http2Answer.readableBytes) bytes; connection open \(client.isActive))")
        }
    }

    /// Sends `request` on `client` and answers it from the pooled backend connection (dialed
    /// the first time); the answer is left in `client`'s outbound buffer.
    private func forward(_ request: ByteBuffer, from client: EmbeddedChannel) throws {
        try client.writeInbound(request)
        loop.run()
        if let dialed = dialer.takeDialed() { requestBackend = dialed }
        guard let backend = requestBackend, try backend.drainOutbound() > 0 else { throw ProbeFailure("the request reached no backend") }
        try backend.writeInbound(response)
        loop.run()
    }

    /// Sends `head` on `client`, answers it from the pooled backend connection (dialed the
    /// first time), and returns how many bytes reached the client.
    private func proxy(_ head: ByteBuffer, from client: EmbeddedChannel) throws -> Int {
        try forward(head, from: client)
        let answered = try client.drainOutbound()
        guard answered > response.readableBytes / 2 else { throw ProbeFailure("the response was not relayed (\(answered) bytes)") }
        return answered
    }
}
