import ArgumentParser
import NIOCore
import NIOHPACK
import NIOHTTP1
import NIOHTTP2
import NIOPosix
import NIOSSL
import NIOWebSocket

/// WebSockets over HTTP/2 (RFC 8441) for the load generator: one HTTP/2 connection per
/// WebSocket (as over HTTP/1.1, so the two compare connection for connection), its one stream
/// opened by an extended CONNECT, the WebSocket frames in its DATA frames.
extension BenchTarget {
    func openHTTP2(
        group: any EventLoopGroup, localAddress: SocketAddress? = nil, extensions: String? = nil,
        handler: @escaping @Sendable (HTTPResponseHead) throws -> any ChannelHandler
    ) async throws -> any Channel {
        let loop = group.next()
        let settled = loop.makePromise(of: Void.self)
        var bootstrap = ClientBootstrap(group: loop)
            .channelOption(.tcpOption(.tcp_nodelay), value: 1)
            .connectTimeout(.seconds(10))
        if let localAddress { bootstrap = bootstrap.bind(to: localAddress) }
        var alpn: NIOSSLContext?
        if tls != nil {
            var configuration = TLSConfiguration.makeClientConfiguration()
            configuration.certificateVerification = .none
            configuration.applicationProtocols = ["h2"]
            alpn = try NIOSSLContext(configuration: configuration)
        }
        let context = alpn
        let connection = try await bootstrap.channelInitializer { channel in
            channel.eventLoop.makeCompletedFuture {
                let sync = channel.pipeline.syncOperations
                if let context { try sync.addHandler(NIOSSLClientHandler(context: context, serverHostname: nil)) }
                try sync.addHandler(NIOHTTP2Handler(mode: .client, eventLoop: channel.eventLoop) { stream in
                    stream.close()  // the server opens no streams
                })
                try sync.addHandler(SettingsWaiter(settled: settled))
            }
        }.connect(host: host, port: port).get()
        connection.closeFuture.whenComplete { _ in settled.fail(ChannelError.alreadyClosed) }
        // `:protocol` may be sent only once the server's SETTINGS allowed it.
        try await settled.futureResult.get()
        let opened = loop.makePromise(of: Void.self)
        let request = ExtendedConnectClient.Request(authority: "\(host):\(port)", path: path, secure: tls != nil, extensions: extensions)
        let stream = try await loop.flatSubmit {
            let multiplexer = try! connection.pipeline.syncOperations.handler(type: NIOHTTP2Handler.self).syncMultiplexer()
            let created = loop.makePromise(of: (any Channel).self)
            multiplexer.createStreamChannel(promise: created) { stream in
                stream.eventLoop.makeCompletedFuture {
                    try stream.pipeline.syncOperations.addHandler(ExtendedConnectClient(request: request, opened: opened, handler: handler))
                }
            }
            return created.futureResult
        }.get()
        stream.closeFuture.whenComplete { _ in
            opened.fail(ChannelError.alreadyClosed)
            connection.close(promise: nil)
        }
        try await opened.futureResult.get()
        return stream
    }
}

/// Completes once the server's first SETTINGS frame has been read.
private final class SettingsWaiter: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTP2Frame
    let settled: EventLoopPromise<Void>

    init(settled: EventLoopPromise<Void>) {
        self.settled = settled
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if case .settings(.settings) = unwrapInboundIn(data).payload { settled.succeed(()) }
        context.fireChannelRead(data)
    }
}

/// The stream's handshake: the extended CONNECT, then, on a 200, the stream becomes a
/// WebSocket: DATA frames ↔ bytes ↔ NIO's WebSocket frame codec ↔ the load handler.
private final class ExtendedConnectClient: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTP2Frame.FramePayload
    typealias OutboundOut = HTTP2Frame.FramePayload

    struct Request: Sendable {
        var authority: String
        var path: String
        var secure: Bool
        var extensions: String?
    }

    let request: Request
    let opened: EventLoopPromise<Void>
    let handler: @Sendable (HTTPResponseHead) throws -> any ChannelHandler

    init(request: Request, opened: EventLoopPromise<Void>, handler: @escaping @Sendable (HTTPResponseHead) throws -> any ChannelHandler) {
        self.request = request
        self.opened = opened
        self.handler = handler
    }

    func channelActive(context: ChannelHandlerContext) {
        var fields = HPACKHeaders([
            (":method", "CONNECT"), (":protocol", "websocket"), (":scheme", request.secure ? "https" : "http"), (":path", request.path),
            (":authority", request.authority), ("sec-websocket-version", "13"),
        ])
        if let extensions = request.extensions { fields.add(name: "sec-websocket-extensions", value: extensions) }
        context.writeAndFlush(wrapOutboundOut(.headers(.init(headers: fields))), promise: nil)
        context.fireChannelActive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard case .headers(let answer) = unwrapInboundIn(data) else { return }
        guard answer.headers.first(name: ":status") == "200" else {
            opened.fail(ValidationError("extended CONNECT refused: \(answer.headers.first(name: ":status") ?? "?")"))
            context.close(promise: nil)
            return
        }
        var headers = HTTPHeaders()
        for (name, value, _) in answer.headers where !name.hasPrefix(":") { headers.add(name: name, value: value) }
        do {
            let sync = context.pipeline.syncOperations
            try sync.addHandler(TunnelClient(), position: .after(self))
            try sync.addHandler(WebSocketFrameEncoder())
            try sync.addHandler(ByteToMessageHandler(WebSocketFrameDecoder(maxFrameSize: 1 << 26)))
            try sync.addHandler(handler(HTTPResponseHead(version: .http2, status: .ok, headers: headers)))
            sync.removeHandler(context: context, promise: nil)
            opened.succeed(())
        } catch {
            opened.fail(error)
            context.close(promise: nil)
        }
    }
}

/// DATA frames in are bytes; bytes out are DATA frames.
private final class TunnelClient: ChannelDuplexHandler {
    typealias InboundIn = HTTP2Frame.FramePayload
    typealias InboundOut = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = HTTP2Frame.FramePayload

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if case .data(let data) = unwrapInboundIn(data), case .byteBuffer(let bytes) = data.data, bytes.readableBytes > 0 {
            context.fireChannelRead(wrapInboundOut(bytes))
        }
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        context.write(wrapOutboundOut(.data(.init(data: .byteBuffer(unwrapOutboundIn(data))))), promise: promise)
    }
}
