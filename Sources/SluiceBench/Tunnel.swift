import ArgumentParser
import Foundation
import NIOCore
import NIOPosix
import NIOSSL

/// `sluice-bench tunnel`: a byte-for-byte TCP relay on SwiftNIO, one backend connection per
/// client connection on the client's event loop, with backpressure both ways — and nothing
/// else: no HTTP parsing, no routing, no headers. It is the floor any proxy built from NIO
/// channel handlers pays per request (two channels, four socket calls, the pipeline), measured
/// beside Sluice and nginx in scenario H1 so the cost of NIO itself is known. With
/// `--tls-listen`, the same process also terminates TLS (swift-nio-ssl, as Sluice does) on a
/// second port and relays the plaintext: the floor for the wss scenarios.
struct Tunnel: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Relay TCP bytes to a loopback backend (the NIO floor for H1).")

    @OptionGroup var serve: ServeOptions

    @Option(help: "Loopback host:port of the backend.")
    var backend: String

    @Option(help: "Loopback host:port to also listen on with TLS (needs --cert and --key; nio engine only).")
    var tlsListen: String?

    @Option(help: "PEM certificate chain for --tls-listen.")
    var cert: String?

    @Option(help: "PEM private key for --tls-listen.")
    var key: String?

    @Option(help: "Event loop threads.")
    var threads: Int = 1


    @Option(help: "nio (channels on a SwiftNIO event loop) or uring (one thread, one io_uring ring; Linux).")
    var engine: String = "nio"

    func run() async throws {
        let listenTarget = try LoopbackTarget(hostPort: serve.listen)
        let backendTarget = try LoopbackTarget(hostPort: backend)
        if engine == "uring" {
            try runUring(listen: listenTarget, backend: backendTarget)
            return
        }
        guard engine == "nio" else { throw ValidationError("--engine is nio or uring") }
        let tls = try tlsListen.map { hostPort -> (LoopbackTarget, NIOSSLContext) in
            guard let cert, let key else { throw ValidationError("--tls-listen needs --cert and --key") }
            let configuration = TLSConfiguration.makeServerConfiguration(
                certificateChain: try NIOSSLCertificate.fromPEMFile(cert).map { .certificate($0) },
                privateKey: .privateKey(try NIOSSLPrivateKey(file: key, format: .pem))
            )
            return (try LoopbackTarget(hostPort: hostPort), try NIOSSLContext(configuration: configuration))
        }
        let backendAddress = try SocketAddress.makeAddressResolvingHost(backendTarget.host, port: backendTarget.port)
        let group = MultiThreadedEventLoopGroup(numberOfThreads: threads)
        func listen(on target: LoopbackTarget, tls: NIOSSLContext?) async throws -> any Channel {
            try await LoopbackServer.bind(target, group: group) { client in
                Self.connect(client, to: backendAddress, tls: tls)
            }
        }
        var servers = [try await listen(on: listenTarget, tls: nil)]
        FileHandle.standardOutput.write(Data("tunnel listening on \(listenTarget.host):\(servers[0].localAddress?.port ?? 0)\n".utf8))
        if let (target, context) = tls {
            servers.append(try await listen(on: target, tls: context))
            FileHandle.standardOutput.write(Data("tunnel (TLS) listening on \(target.host):\(servers[1].localAddress?.port ?? 0)\n".utf8))
        }
        try await Task.sleep(for: .seconds(serve.duration))
        for server in servers { try await server.close() }
        try await group.shutdownGracefully()
    }

    /// Opens the backend side for `client` (behind TLS when `tls` is given) and joins the two;
    /// the client closes if it fails.
    static func connect(_ client: any Channel, to backend: SocketAddress, tls: NIOSSLContext? = nil) -> EventLoopFuture<Void> {
        let clientSide = TunnelSide()
        let backendSide = TunnelSide()
        clientSide.partner = backendSide
        backendSide.partner = clientSide
        do {
            if let tls { try client.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: tls)) }
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

extension Tunnel {
    /// The io_uring engine: a blocking loop on this thread until `duration` has passed.
    func runUring(listen: LoopbackTarget, backend: LoopbackTarget) throws {
        #if canImport(CLibURing)
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var one: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = UInt16(listen.port).bigEndian
        address.sin_addr.s_addr = inet_addr(listen.host)
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) } }
        guard bound == 0, Glibc.listen(fd, 4096) == 0 else { throw ValidationError("cannot listen on \(listen.host):\(listen.port)") }
        _ = withUnsafeMutablePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) } }
        let engine = try UringTunnel(listener: fd, backendPort: UInt16(backend.port))
        FileHandle.standardOutput.write(Data("tunnel (io_uring) listening on \(listen.host):\(UInt16(bigEndian: address.sin_port))\n".utf8))
        var start = timespec()
        clock_gettime(CLOCK_MONOTONIC, &start)
        engine.run(until: Double(start.tv_sec) + Double(start.tv_nsec) / 1e9 + Double(serve.duration))
        close(fd)
        #else
        throw ValidationError("--engine uring needs Linux and liburing")
        #endif
    }
}
