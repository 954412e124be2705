import ArgumentParser
import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL
import NIOWebSocket

/// A `ws://` or `wss://` URL on loopback, and how to open WebSockets to it.
struct BenchTarget: Sendable {
    var host: String
    var port: Int
    var path: String
    var tls: NIOSSLContext?

    init(url: String) throws {
        let secure = url.hasPrefix("wss://")
        guard secure || url.hasPrefix("ws://") else { throw ValidationError("the URL must be ws:// or wss://, got \(url)") }
        let rest = url.dropFirst(secure ? 6 : 5)
        let authority = rest.prefix { $0 != "/" }
        let loopback = try LoopbackTarget(hostPort: String(authority))
        host = loopback.host
        port = loopback.port
        path = rest.dropFirst(authority.count).isEmpty ? "/" : String(rest.dropFirst(authority.count))
        if secure {
            // Loopback benchmarks against self-signed certificates: no verification.
            var configuration = TLSConfiguration.makeClientConfiguration()
            configuration.certificateVerification = .none
            tls = try NIOSSLContext(configuration: configuration)
        }
    }

    /// Opens one WebSocket and puts `handler` (a `WebSocketFrame` handler, made from the
    /// server's 101) behind it; `localAddress` spreads source addresses over 127.0.0.x to avoid
    /// ephemeral-port exhaustion; `extensions` is offered in `Sec-WebSocket-Extensions`.
    func open(
        group: any EventLoopGroup, localAddress: SocketAddress? = nil, extensions: String? = nil,
        handler: @escaping @Sendable (HTTPResponseHead) throws -> any ChannelHandler
    ) async throws -> any Channel {
        try await openTimed(group: group, localAddress: localAddress, extensions: extensions, handler: handler).channel
    }

    /// `open`, with the handshake's duration as the channel's event loop saw it: from the
    /// socket's creation (before the connect) to the 101. Timed on the loop, so the caller's
    /// task scheduling is not part of it.
    func openTimed(
        group: any EventLoopGroup, localAddress: SocketAddress? = nil, extensions: String? = nil,
        handler: @escaping @Sendable (HTTPResponseHead) throws -> any ChannelHandler
    ) async throws -> (channel: any Channel, handshake: TimeAmount) {
        try await dial(group: group, localAddress: localAddress, extensions: extensions, handler: handler).get()
    }

    /// How long an open waits for the server's 101 once connected.
    static let handshakeTimeout: TimeAmount = .seconds(30)

    /// `openTimed` as a future, for callers that pace their opens with an event loop's timers.
    func dial(
        group: any EventLoopGroup, localAddress: SocketAddress? = nil, extensions: String? = nil,
        handler: @escaping @Sendable (HTTPResponseHead) throws -> any ChannelHandler
    ) -> EventLoopFuture<(channel: any Channel, handshake: TimeAmount)> {
        let opened = group.next().makePromise(of: TimeAmount.self)
        var bootstrap = ClientBootstrap(group: group)
            .channelOption(.tcpOption(.tcp_nodelay), value: 1)
            .connectTimeout(.seconds(10))
        if let localAddress { bootstrap = bootstrap.bind(to: localAddress) }
        let host = self.host, port = self.port, path = self.path, tls = self.tls
        return bootstrap.channelInitializer { channel in
            let began = NIODeadline.now()
            let key = Data((0..<16).map { _ in UInt8.random(in: 0...255) }).base64EncodedString()
            let sender = UpgradeRequestSender(host: "\(host):\(port)", path: path, extensions: extensions, failed: opened)
            let upgrader = NIOWebSocketClientUpgrader(requestKey: key, maxFrameSize: 1 << 26, automaticErrorHandling: true) { channel, response in
                channel.eventLoop.makeCompletedFuture {
                    if let sender = try? channel.pipeline.syncOperations.handler(type: UpgradeRequestSender.self) {
                        _ = channel.pipeline.syncOperations.removeHandler(sender)
                    }
                    do {
                        try channel.pipeline.syncOperations.addHandler(handler(response))
                        opened.succeed(NIODeadline.now() - began)
                    } catch {
                        opened.fail(error)
                        throw error
                    }
                }
            }
            return channel.eventLoop.makeCompletedFuture {
                if let tls { try channel.pipeline.syncOperations.addHandler(NIOSSLClientHandler(context: tls, serverHostname: nil)) }
                try channel.pipeline.syncOperations.addHTTPClientHandlers(withClientUpgrade: (upgraders: [upgrader], completionHandler: { _ in }))
                try channel.pipeline.syncOperations.addHandler(sender)
            }
        }.connect(host: host, port: port).flatMapError { error in
            opened.fail(error)
            return opened.futureResult.eventLoop.makeFailedFuture(error)
        }.flatMap { channel in
            channel.closeFuture.whenComplete { _ in opened.fail(ChannelError.alreadyClosed) }
            // A server that accepts and never answers fails the open instead of holding it (and
            // the run waiting for it) forever.
            let deadline = channel.eventLoop.scheduleTask(in: Self.handshakeTimeout) {
                opened.fail(ValidationError("no 101 within \(Self.handshakeTimeout.nanoseconds / 1_000_000_000) s"))
                channel.close(promise: nil)
            }
            opened.futureResult.whenComplete { _ in deadline.cancel() }
            return opened.futureResult.map { (channel, $0) }
        }
    }
}

/// Sends the GET that the upgrade handler turns into a WebSocket upgrade.
final class UpgradeRequestSender: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPClientResponsePart
    typealias OutboundOut = HTTPClientRequestPart
    let host: String
    let path: String
    let extensions: String?
    let failed: EventLoopPromise<TimeAmount>

    init(host: String, path: String, extensions: String?, failed: EventLoopPromise<TimeAmount>) {
        self.host = host
        self.path = path
        self.extensions = extensions
        self.failed = failed
    }

    func channelActive(context: ChannelHandlerContext) {
        var headers = HTTPHeaders()
        headers.add(name: "Host", value: host)
        headers.add(name: "Content-Length", value: "0")
        if let extensions { headers.add(name: "Sec-WebSocket-Extensions", value: extensions) }
        context.write(wrapOutboundOut(.head(HTTPRequestHead(version: .http1_1, method: .GET, uri: path, headers: headers))), promise: nil)
        context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
        context.fireChannelActive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if case .head(let head) = unwrapInboundIn(data) {
            failed.fail(ValidationError("upgrade refused: \(head.status.code)"))
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        failed.fail(error)
        context.close(promise: nil)
    }
}
