import ArgumentParser
import Foundation
import NIOCore
import NIOPosix

/// `sluice-bench tunnel`: a byte-for-byte TCP relay on SwiftNIO, one backend connection per
/// client connection on the client's event loop, with backpressure both ways — and nothing
/// else: no HTTP parsing, no routing, no headers. It is the floor any proxy built from NIO
/// channel handlers pays per request (two channels, four socket calls, the pipeline), measured
/// beside Sluice and nginx in scenario H1 so the cost of NIO itself is known.
struct Tunnel: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Relay TCP bytes to a loopback backend (the NIO floor for H1).")

    @Option(help: "Loopback host:port to listen on (port 0 = chosen by the OS).")
    var listen: String = "127.0.0.1:0"

    @Option(help: "Loopback host:port of the backend.")
    var backend: String

    @Option(help: "Event loop threads.")
    var threads: Int = 1

    @Option(help: "Stop after this many seconds.")
    var duration: Int = 3600

    func run() async throws {
        let listenTarget = try LoopbackTarget(hostPort: listen)
        let backendTarget = try LoopbackTarget(hostPort: backend)
        let backendAddress = try SocketAddress.makeAddressResolvingHost(backendTarget.host, port: backendTarget.port)
        let group = MultiThreadedEventLoopGroup(numberOfThreads: threads)
        let server = try await ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 4096)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.tcpOption(.tcp_nodelay), value: 1)
            .childChannelInitializer { client in
                Self.connect(client, to: backendAddress)
            }
            .bind(host: listenTarget.host, port: listenTarget.port).get()
        FileHandle.standardOutput.write(Data("tunnel listening on \(listenTarget.host):\(server.localAddress?.port ?? 0)\n".utf8))
        try await Task.sleep(for: .seconds(duration))
        try await server.close()
        try await group.shutdownGracefully()
    }

    /// Opens the backend side for `client` and joins the two; the client closes if it fails.
    static func connect(_ client: any Channel, to backend: SocketAddress) -> EventLoopFuture<Void> {
        let clientSide = TunnelSide()
        let backendSide = TunnelSide()
        clientSide.partner = backendSide
        backendSide.partner = clientSide
        do {
            try client.pipeline.syncOperations.addHandler(clientSide)
        } catch {
            return client.eventLoop.makeFailedFuture(error)
        }
        ClientBootstrap(group: client.eventLoop)
            .channelOption(.tcpOption(.tcp_nodelay), value: 1)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(backendSide) }
            }
            .connect(to: backend)
            .whenFailure { _ in client.close(promise: nil) }
        return client.eventLoop.makeSucceededVoidFuture()
    }
}

/// One end of a tunnel: what it reads goes to its partner; it reads only while the partner is
/// connected and can take more; it closes with its partner.
final class TunnelSide: ChannelDuplexHandler, @unchecked Sendable {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = ByteBuffer

    /// Set before either channel is active; cleared when this side closes (breaks the cycle).
    var partner: TunnelSide?
    private var context: ChannelHandlerContext?
    private var readHeld = false

    func handlerAdded(context: ChannelHandlerContext) { self.context = context }

    func channelActive(context: ChannelHandlerContext) {
        context.fireChannelActive()
        partner?.resumeReading()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        partner?.context?.write(data, promise: nil)
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        partner?.context?.flush()
    }

    func read(context: ChannelHandlerContext) {
        if let target = partner?.context?.channel, target.isActive, target.isWritable {
            context.read()
        } else {
            readHeld = true
        }
    }

    private func resumeReading() {
        guard readHeld, let context else { return }
        readHeld = false
        read(context: context)
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable { partner?.resumeReading() }
        context.fireChannelWritabilityChanged()
    }

    func channelInactive(context: ChannelHandlerContext) {
        let partner = self.partner
        self.partner = nil
        self.context = nil
        partner?.partner = nil
        partner?.context?.close(promise: nil)
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }
}
