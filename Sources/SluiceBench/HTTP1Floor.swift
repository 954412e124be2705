import ArgumentParser
import Foundation
import NIOCore
import NIOPosix

/// `sluice-bench h1floor`: an HTTP/1.1 server on SwiftNIO that answers every request itself
/// with the 64 bytes the H1 scenario's backend serves — no backend, no routing, no parsing
/// beyond finding the end of a head and whether it asked `Connection: close`. It is what NIO
/// costs per request before any proxying: one channel, a read, a write and, for a client that
/// closes after each request, the accept, pipeline set-up and close. `benchmarks/h1_pairs.py
/// --answer-floor` measures it beside Sluice and nginx, so the share of a request no HTTP
/// layer on NIO can remove is known (the tunnel floor pays a backend connection per client).
struct HTTP1Floor: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "h1floor", abstract: "Answer HTTP/1.1 requests directly (the NIO floor for a proxied request)."
    )

    @OptionGroup var serve: ServeOptions

    func run() async throws {
        let target = try LoopbackTarget(hostPort: serve.listen)
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let server = try await LoopbackServer.bind(target, group: group) { channel in
            channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(FloorHTTP1Answer()) }
        }
        FileHandle.standardOutput.write(Data("h1floor listening on \(target.host):\(server.localAddress?.port ?? 0)\n".utf8))
        try await Task.sleep(for: .seconds(serve.duration))
        try await server.close()
        try await group.shutdownGracefully()
    }
}

/// Answers each complete request head on the connection (GETs only: a body is not read), one
/// flush per read batch, and closes after the answer to a head that asked `Connection: close`.
private final class FloorHTTP1Answer: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private static let body = String(repeating: "0123456789abcdef", count: 4)
    private static let keepAlive = ByteBuffer(string: "HTTP/1.1 200 OK\r\nServer: h1floor\r\nContent-Type: text/plain\r\nContent-Length: 64\r\n\r\n" + body)
    private static let closing = ByteBuffer(
        string: "HTTP/1.1 200 OK\r\nServer: h1floor\r\nContent-Type: text/plain\r\nContent-Length: 64\r\nConnection: close\r\n\r\n" + body
    )
    private static let headEnd = Array("\r\n\r\n".utf8)
    private static let close = Array("connection: close".utf8)

    private var pending = ByteBuffer()
    private var answered = false
    private var closeAfterFlush = false

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var bytes = unwrapInboundIn(data)
        pending.writeBuffer(&bytes)
        while !closeAfterFlush, let end = FloorBytes.find(Self.headEnd, in: pending.readableBytesView) {
            let head = pending.readableBytesView[pending.readerIndex..<end]
            closeAfterFlush = FloorBytes.find(Self.close, in: head, ignoringCase: true) != nil
            pending.moveReaderIndex(to: end + Self.headEnd.count)
            context.write(wrapOutboundOut(closeAfterFlush ? Self.closing : Self.keepAlive), promise: nil)
            answered = true
        }
        pending.discardReadBytes()
        // A head this long is no benchmark request: no buffer grows without end.
        if pending.readableBytes > FloorBytes.maxHead { context.close(promise: nil) }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        guard answered else { return }
        answered = false
        context.flush()
        if closeAfterFlush { context.close(promise: nil) }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }

}

/// Byte search for the floors, which read HTTP/1.1 heads without a parser.
enum FloorBytes {
    /// The longest head a floor reads: longer is no benchmark request, and no buffer grows
    /// without end.
    static let maxHead = 64 * 1024

    /// The index of the first occurrence of `needle` in `haystack`, comparing letters without
    /// case when asked.
    static func find(_ needle: [UInt8], in haystack: ByteBufferView, ignoringCase: Bool = false) -> Int? {
        guard haystack.count >= needle.count else { return nil }
        var index = haystack.startIndex
        let last = haystack.endIndex - needle.count
        while index <= last {
            var matched = true
            for offset in 0..<needle.count {
                var byte = haystack[index + offset]
                if ignoringCase, byte >= 0x41, byte <= 0x5A { byte |= 0x20 }
                if byte != needle[offset] {
                    matched = false
                    break
                }
            }
            if matched { return index }
            index += 1
        }
        return nil
    }
}
