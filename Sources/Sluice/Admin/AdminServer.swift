import Foundation
import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import SluiceConfig

/// The admin listener: plain HTTP for operators and their tools — Prometheus metrics, the live
/// connections (and closing one), reload and drain, liveness and readiness. Loopback by default;
/// everything but `/healthz` and `/readyz` requires the bearer token when one is configured.
final class AdminServer: Sendable {
    let address: SocketAddress
    private let channel: any Channel

    private init(channel: any Channel, address: SocketAddress) {
        self.channel = channel
        self.address = address
    }

    static func start(configuration: AdminConfiguration, gateway: Gateway, group: any EventLoopGroup, logger: Logger) async throws -> AdminServer {
        let api = AdminAPI(gateway: gateway)
        let bootstrap = ServerBootstrap(group: group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline(withErrorHandling: true)
                    try channel.pipeline.syncOperations.addHandler(AdminHandler(api: api))
                }
            }
        let channel: any Channel
        do {
            channel = try await bootstrap.bind(host: configuration.address.host, port: configuration.address.port).get()
        } catch {
            throw ConfigError(path: "admin.address", message: "cannot listen on \(configuration.address): \(error)")
        }
        guard let address = channel.localAddress else {
            throw ConfigError(path: "admin.address", message: "the admin socket has no local address")
        }
        return AdminServer(channel: channel, address: address)
    }

    func stop() async {
        try? await channel.close()
    }
}

/// Reads one admin request at a time and answers it through `AdminAPI`.
final class AdminHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private let api: AdminAPI
    private var head: HTTPRequestHead?

    init(api: AdminAPI) { self.api = api }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            self.head = head
        case .body:
            break
        case .end:
            guard let head else { return }
            self.head = nil
            let keepAlive = head.isKeepAlive
            api.answer(head, on: context.eventLoop).assumeIsolated().whenSuccess { [self] response in
                write(response, keepAlive: keepAlive, isHead: head.method == .HEAD, context: context)
            }
        }
    }

    private func write(_ response: AdminAPI.Response, keepAlive: Bool, isHead: Bool, context: ChannelHandlerContext) {
        var headers = HTTPHeaders()
        headers.add(name: "Content-Type", value: response.contentType)
        headers.add(name: "Content-Length", value: String(response.body.count))
        headers.add(name: "Cache-Control", value: "no-store")
        for (name, value) in response.headers { headers.add(name: name, value: value) }
        if !keepAlive { headers.add(name: "Connection", value: "close") }
        context.write(wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: response.status, headers: headers))), promise: nil)
        if !isHead {
            context.write(wrapOutboundOut(.body(.byteBuffer(ByteBuffer(bytes: response.body)))), promise: nil)
        }
        let done = context.writeAndFlush(wrapOutboundOut(.end(nil)))
        if !keepAlive { done.assumeIsolated().whenComplete { _ in context.close(promise: nil) } }
    }
}
