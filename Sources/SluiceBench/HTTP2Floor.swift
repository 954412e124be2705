import ArgumentParser
import Foundation
import NIOCore
import NIOHPACK
import NIOHTTP2
import NIOPosix
import NIOSSL

/// `sluice-bench h2floor`: an HTTP/2 server over TLS on SwiftNIO that answers every request
/// itself with 64 bytes — no backend, no routing, no headers beyond `:status` and
/// `content-length`. It is what NIO's TLS and HTTP/2 cost per request before any proxying,
/// measured beside Sluice, nginx and HAProxy by `benchmarks/h2.py --floor`, in two shapes:
/// `streams` (NIOHTTP2's multiplexer with a child channel per stream, the shape Sluice uses)
/// and `frames` (the connection's frames handled on the connection's own pipeline, no child
/// channels), so the share of the per-stream channel is known; and `proxy`, the frames shape
/// sending each request on to a keep-alive HTTP/1.1 `--backend` (`FloorBackendPool`): the least
/// any HTTP/2 proxying on NIO channels costs.
struct HTTP2Floor: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "h2floor", abstract: "Answer HTTP/2 requests over TLS directly (the NIO floor for h2)."
    )

    @OptionGroup var serve: ServeOptions

    @Option(help: "PEM certificate chain.")
    var cert: String

    @Option(help: "PEM private key.")
    var key: String

    @Option(help: "streams (a child channel per stream), frames (the connection's frames, no child channels), proxy (frames, each request sent on to --backend), raw or raw-proxy (frames as bytes, no NIOHTTP2).")
    var mode: String = "streams"

    @Option(help: "Loopback host:port of the HTTP/1.1 backend, for --mode proxy and raw-proxy.")
    var backend: String?

    @Option(help: "Seconds a request waits for the backend's answer before its stream gets a 502 (--mode proxy and raw-proxy).")
    var backendTimeout: Double = 10

    func run() async throws {
        let target = try LoopbackTarget(hostPort: serve.listen)
        guard ["streams", "frames", "proxy", "raw", "raw-proxy"].contains(mode) else {
            throw ValidationError("--mode is streams, frames, proxy, raw or raw-proxy")
        }
        let backendTarget = try backend.map { try LoopbackTarget(hostPort: $0) }
        if mode.hasSuffix("proxy") && backendTarget == nil { throw ValidationError("--mode \(mode) needs --backend host:port") }
        guard backendTimeout > 0 else { throw ValidationError("--backend-timeout must be more than 0 seconds") }
        let timeout = TimeAmount.nanoseconds(Int64(backendTimeout * 1e9))
        var tls = TLSConfiguration.makeServerConfiguration(
            certificateChain: try NIOSSLCertificate.fromPEMFile(cert).map { .certificate($0) },
            privateKey: .privateKey(try NIOSSLPrivateKey(file: key, format: .pem))
        )
        tls.applicationProtocols = ["h2"]
        let context = try NIOSSLContext(configuration: tls)
        let mode = self.mode
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let loop = group.next()
        // One event loop, so one pool, used only on it.
        let pool = try await loop.submit {
            backendTarget.map { NIOLoopBound(FloorBackendPool(eventLoop: loop, backend: $0, timeout: timeout), eventLoop: loop) }
        }.get()
        let server = try await LoopbackServer.bind(target, group: group) { channel in
            channel.eventLoop.makeCompletedFuture {
                let sync = channel.pipeline.syncOperations
                try sync.addHandler(NIOSSLServerHandler(context: context))
                switch mode {
                case "streams":
                    try sync.addHandler(NIOHTTP2Handler(mode: .server, eventLoop: channel.eventLoop) { stream in
                        stream.eventLoop.makeCompletedFuture { try stream.pipeline.syncOperations.addHandler(FloorStreamAnswer()) }
                    })
                case "proxy":
                    try sync.addHandler(NIOHTTP2Handler(mode: .server))
                    try sync.addHandler(FloorFrameProxy(pool: pool!.value))
                case "raw":
                    try sync.addHandler(FloorRawConnection(pool: nil))
                case "raw-proxy":
                    try sync.addHandler(FloorRawConnection(pool: pool!.value))
                default:
                    try sync.addHandler(NIOHTTP2Handler(mode: .server))
                    try sync.addHandler(FloorFrameAnswer())
                }
            }
        }
        FileHandle.standardOutput.write(Data("h2floor (\(mode)) listening on \(target.host):\(server.localAddress?.port ?? 0)\n".utf8))
        try await Task.sleep(for: .seconds(serve.duration))
        try await server.close()
        try await group.shutdownGracefully()
    }
}

extension HTTP2Frame.FramePayload {
    /// A request's HEADERS or DATA frame that ends it: when the floors answer.
    var endsStream: Bool {
        switch self {
        case .headers(let headers): headers.endStream
        case .data(let data): data.endStream
        default: false
        }
    }
}

/// The floor's answer: `200`, 64 bytes.
enum FloorAnswer {
    static let headers: HPACKHeaders = [":status": "200", "content-length": "64"]
    static let body = ByteBuffer(string: String(repeating: "0123456789abcdef", count: 4))
}

/// Answers on a stream's child channel when the request's END_STREAM arrives.
private final class FloorStreamAnswer: ChannelInboundHandler {
    typealias InboundIn = HTTP2Frame.FramePayload
    typealias OutboundOut = HTTP2Frame.FramePayload

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard unwrapInboundIn(data).endsStream else { return }
        context.write(wrapOutboundOut(.headers(.init(headers: FloorAnswer.headers))), promise: nil)
        context.writeAndFlush(wrapOutboundOut(.data(.init(data: .byteBuffer(FloorAnswer.body), endStream: true))), promise: nil)
    }
}

/// Answers on the connection's pipeline, by stream ID, when a request's END_STREAM arrives.
private final class FloorFrameAnswer: ChannelInboundHandler {
    typealias InboundIn = HTTP2Frame
    typealias OutboundOut = HTTP2Frame
    private var pending = false

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let frame = unwrapInboundIn(data)
        guard frame.payload.endsStream else { return }
        context.write(wrapOutboundOut(HTTP2Frame(streamID: frame.streamID, payload: .headers(.init(headers: FloorAnswer.headers)))), promise: nil)
        context.write(
            wrapOutboundOut(HTTP2Frame(streamID: frame.streamID, payload: .data(.init(data: .byteBuffer(FloorAnswer.body), endStream: true)))),
            promise: nil
        )
        pending = true
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        if pending {
            pending = false
            context.flush()
        }
        context.fireChannelReadComplete()
    }
}
