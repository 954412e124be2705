import NIOCore
import NIOEmbedded
import NIOHTTP1
import Testing
@testable import Sluice

/// The backend side of an upgrade on an `EmbeddedChannel`: the request goes out as written, the
/// answer comes back part by part, and a first frame behind the 101 reaches the relay.
@Suite("Upstream handshake handler")
struct UpstreamHandshakeHandlerTests {
    /// Collects what passes the handshake handler once it has left (the relay's place).
    final class Collector: ChannelInboundHandler {
        typealias InboundIn = ByteBuffer
        var bytes: [UInt8] = []
        func channelRead(context: ChannelHandlerContext, data: NIOAny) { bytes += unwrapInboundIn(data).readableBytesView }
    }

    /// A channel with the handler, connected (the request is written), and the events it reported.
    final class Setup {
        let channel = EmbeddedChannel()
        var events: [String] = []
        var handler: UpstreamHandshakeHandler!
        /// On a 101's end, do what the upgrade does: relay behind, handshake handler out.
        var collector: Collector?

        init(switching: Bool = true) throws {
            handler = UpstreamHandshakeHandler(request: ByteBuffer(string: "GET /ws HTTP/1.1\r\n\r\n")) { [unowned self] event in
                switch event {
                case .head(let raw):
                    let head = raw.responseHead
                    events.append("head \(head.status.code) \(head.status.reasonPhrase) \(head.headers["x-a"])")
                case .body(let body): events.append("body \(String(buffer: body))")
                case .end:
                    events.append("end")
                    if switching, events.first?.hasPrefix("head 101") == true {
                        let collector = Collector()
                        self.collector = collector
                        handler.detach()
                        let sync = channel.pipeline.syncOperations
                        try! sync.addHandler(collector)
                        sync.removeHandler(handler, promise: nil)
                    }
                case .failed(let error): events.append("failed \(error)")
                }
            }
            try channel.pipeline.syncOperations.addHandler(handler)
            try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
        }
    }

    @Test("connected, it writes the request; a 101 reports its head and end, and the bytes behind it reach the relay")
    func switches() throws {
        let setup = try Setup()
        #expect(try setup.channel.readOutbound(as: ByteBuffer.self).map { String(buffer: $0) } == "GET /ws HTTP/1.1\r\n\r\n")
        var answer = ByteBuffer(string: "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nX-A: 1\r\n\r\n")
        answer.writeBytes([0x81, 0x01])
        try setup.channel.writeInbound(answer)
        #expect(setup.events == ["head 101 Switching Protocols [\"1\"]", "end"])
        #expect(setup.collector?.bytes == [0x81, 0x01])
        try setup.channel.writeInbound(ByteBuffer(string: "x"))
        #expect(setup.collector?.bytes == [0x81, 0x01, UInt8(ascii: "x")])
        #expect(throws: ChannelPipelineError.notFound) { try setup.channel.pipeline.syncOperations.context(handlerType: UpstreamHandshakeHandler.self) }
    }

    @Test("a refusal is streamed: head with its reason, body, end; a body until close ends when the backend closes")
    func refusals() throws {
        let sized = try Setup()
        try sized.channel.writeInbound(ByteBuffer(string: "HTTP/1.1 499 Client Gone\r\nContent-Length: 2\r\nX-A: b\r\n\r\nno"))
        #expect(sized.events == ["head 499 Client Gone [\"b\"]", "body no", "end"])

        let untilClose = try Setup()
        try untilClose.channel.writeInbound(ByteBuffer(string: "HTTP/1.1 500 Internal Server Error\r\n\r\nbro"))
        try untilClose.channel.writeInbound(ByteBuffer(string: "ken"))
        untilClose.channel.pipeline.fireChannelInactive()
        #expect(untilClose.events == ["head 500 Internal Server Error []", "body bro", "body ken", "end"])
    }

    @Test("no answer, half an answer or a malformed one is a failure, reported once")
    func failures() throws {
        let silent = try Setup()
        silent.channel.pipeline.fireChannelInactive()
        #expect(silent.events.count == 1 && silent.events[0].hasPrefix("failed"))

        let cut = try Setup()
        try cut.channel.writeInbound(ByteBuffer(string: "HTTP/1.1 101 Swi"))
        cut.channel.pipeline.fireChannelInactive()
        #expect(cut.events.count == 1 && cut.events[0].contains("malformed response"), "\(cut.events)")

        let malformed = try Setup()
        try malformed.channel.writeInbound(ByteBuffer(string: "HTTP/1.1 200 OK\nContent-Length: 0\r\n\r\n"))
        #expect(malformed.events.count == 1 && malformed.events[0].contains("malformed response"), "\(malformed.events)")
        #expect(!malformed.channel.isActive)
    }
}
