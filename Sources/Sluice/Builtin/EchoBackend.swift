import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOWebSocket

/// The `builtin:echo` backend: a small WebSocket echo server on a loopback port chosen by the
/// OS, so the default configuration has something to relay to on a fresh machine.
///
/// It echoes each message whole (up to 16 MiB), answers pings, and answers a close with a close.
/// With `deflate`, it accepts permessage-deflate when a client offers it, as most servers do.
public final class EchoBackend: Sendable {
    private let channel: any Channel

    /// The loopback port it listens on.
    public var port: Int { channel.localAddress?.port ?? 0 }

    private init(channel: any Channel) { self.channel = channel }

    public static func start(group: any EventLoopGroup, host: String = "127.0.0.1", port: Int = 0, deflate: Bool = false) async throws -> EchoBackend {
        @Sendable func negotiated(_ head: HTTPRequestHead) -> (PerMessageDeflate, response: String)? {
            deflate ? PerMessageDeflate.accept(offers: head.headers) : nil
        }
        let upgrader = NIOWebSocketServerUpgrader(
            maxFrameSize: EchoHandler.maxCompressedSize,
            shouldUpgrade: { channel, head in
                var headers = HTTPHeaders()
                if let (_, response) = negotiated(head) { headers.add(name: "Sec-WebSocket-Extensions", value: response) }
                return channel.eventLoop.makeSucceededFuture(headers)
            },
            upgradePipelineHandler: { channel, head in
                channel.eventLoop.makeCompletedFuture {
                    let codec = try negotiated(head).map { try $0.0.codec(isServer: true, maxMessageSize: EchoHandler.maxMessageSize) }
                    try channel.pipeline.syncOperations.addHandler(EchoHandler(compression: codec))
                }
            }
        )
        let channel = try await ServerBootstrap(group: group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .serverChannelOption(.tcpOption(.tcp_nodelay), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline(
                        withServerUpgrade: (upgraders: [upgrader], completionHandler: { context in
                            if let plain = try? context.pipeline.syncOperations.handler(type: NotWebSocketHandler.self) {
                                _ = context.pipeline.syncOperations.removeHandler(plain)
                            }
                        })
                    )
                    try channel.pipeline.syncOperations.addHandler(NotWebSocketHandler())
                }
            }
            .bind(host: host, port: port).get()
        return EchoBackend(channel: channel)
    }

    public func stop() async {
        try? await channel.close()
    }
}

/// Answers plain HTTP requests to the echo backend with 426.
private final class NotWebSocketHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard case .end = unwrapInboundIn(data) else { return }
        var headers = HTTPHeaders()
        headers.add(name: "Content-Length", value: "0")
        headers.add(name: "Connection", value: "close")
        context.write(wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: .upgradeRequired, headers: headers))), promise: nil)
        context.writeAndFlush(wrapOutboundOut(.end(nil))).assumeIsolated().whenComplete { _ in context.close(promise: nil) }
    }
}

/// Echoes whole messages: fragments are gathered (keeping the first frame's RSV1, which
/// marks a compressed message) and each message goes back as one frame, compressed again when
/// the connection negotiated permessage-deflate.
private final class EchoHandler: ChannelInboundHandler {
    typealias InboundIn = WebSocketFrame
    typealias OutboundOut = WebSocketFrame

    static let maxMessageSize = 16 << 20
    /// Incompressible data grows a little when compressed.
    static let maxCompressedSize = maxMessageSize + (64 << 10)

    private let compression: (MessageCompressor, MessageDecompressor)?
    private var closing = false
    /// The message being gathered: its opcode, whether it is compressed, and its bytes.
    private var message: (opcode: WebSocketOpcode, compressed: Bool, data: ByteBuffer)?

    init(compression: (MessageCompressor, MessageDecompressor)?) {
        self.compression = compression
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let frame = unwrapInboundIn(data)
        switch frame.opcode {
        case .text, .binary, .continuation:
            guard !closing else { return }
            gather(frame, context: context)
        case .ping:
            guard !closing else { return }
            context.writeAndFlush(wrapOutboundOut(WebSocketFrame(fin: true, opcode: .pong, data: frame.unmaskedData)), promise: nil)
        case .connectionClose:
            var payload = frame.unmaskedData
            let code = payload.readInteger(as: UInt16.self)
            var reply = context.channel.allocator.buffer(capacity: 2)
            if let code { reply.writeInteger(code) }
            sendClose(reply, context: context)
        default:
            break
        }
    }

    private func gather(_ frame: WebSocketFrame, context: ChannelHandlerContext) {
        var payload = frame.unmaskedData
        if frame.opcode == .continuation {
            guard message != nil, !frame.rsv1 else { return fail(.protocolError, context: context) }
            message!.data.writeBuffer(&payload)
        } else {
            guard message == nil, !frame.rsv1 || compression != nil else { return fail(.protocolError, context: context) }
            message = (frame.opcode, frame.rsv1, payload)
        }
        guard let gathered = message, gathered.data.readableBytes <= (gathered.compressed ? Self.maxCompressedSize : Self.maxMessageSize) else { return fail(.messageTooLarge, context: context) }
        guard frame.fin else { return }
        message = nil
        do {
            var reply = gathered.data
            if gathered.compressed, let (compressor, decompressor) = compression {
                let plain = try decompressor.decompress(gathered.data, allocator: context.channel.allocator)
                reply = try compressor.compress(plain, allocator: context.channel.allocator)
            }
            let frame = WebSocketFrame(fin: true, rsv1: gathered.compressed, opcode: gathered.opcode, data: reply)
            context.writeAndFlush(wrapOutboundOut(frame), promise: nil)
        } catch {
            fail(.dataInconsistentWithMessage, context: context)
        }
    }

    private func fail(_ code: WebSocketErrorCode, context: ChannelHandlerContext) {
        message = nil
        var reply = context.channel.allocator.buffer(capacity: 2)
        reply.write(webSocketErrorCode: code)
        sendClose(reply, context: context)
    }

    private func sendClose(_ payload: ByteBuffer, context: ChannelHandlerContext) {
        guard !closing else { return }
        closing = true
        context.writeAndFlush(wrapOutboundOut(WebSocketFrame(fin: true, opcode: .connectionClose, data: payload))).assumeIsolated().whenComplete { _ in
            context.close(promise: nil)
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }
}
