import NIOCore
import NIOEmbedded
import NIOHTTP1
import Testing
@testable import Sluice

/// The fast path for simple request heads: what it reads must be exactly what NIO's decoder
/// reads, and everything else must go to NIO's decoder untouched.
@Suite("Simple request heads (fast path)")
struct SimpleRequestHeadTests {
    /// Collects the request parts that reach the end of a pipeline.
    final class Collector: ChannelInboundHandler, RemovableChannelHandler {
        typealias InboundIn = HTTPServerRequestPart
        var parts: [HTTPServerRequestPart] = []
        func channelRead(context: ChannelHandlerContext, data: NIOAny) { parts.append(unwrapInboundIn(data)) }
    }

    /// What NIO's own decoder makes of `text`.
    static func nioParts(_ text: String) throws -> [HTTPServerRequestPart] {
        let channel = EmbeddedChannel()
        let collector = Collector()
        try channel.pipeline.syncOperations.addHandler(ByteToMessageHandler(HTTPRequestDecoder(leftOverBytesStrategy: .forwardBytes)))
        try channel.pipeline.syncOperations.addHandler(collector)
        try channel.writeInbound(ByteBuffer(string: text))
        _ = try? channel.finish()
        return collector.parts
    }

    static func parse(_ text: String) -> SimpleRequestHead.Outcome {
        ByteBuffer(string: text).withUnsafeReadableBytes { SimpleRequestHead.parse($0) }
    }

    static func describe(_ head: HTTPRequestHead) -> String {
        "\(head.method.rawValue) \(head.uri) \(head.version) keepAlive=\(head.isKeepAlive) "
            + head.headers.map { "[\($0.name)|\($0.value)]" }.joined()
    }

    @Test("what the fast path reads, NIO's decoder reads the same", arguments: [
        "GET / HTTP/1.1\r\nHost: a\r\n\r\n",
        "GET /index.html?x=1&y=%20z HTTP/1.1\r\nHost: example.com:8080\r\nUser-Agent: curl/7.88.1\r\nAccept: */*\r\n\r\n",
        "HEAD /a/b/../c HTTP/1.1\r\nhost: a\r\nconnection: close\r\n\r\n",
        "GET / HTTP/1.0\r\nHost: a\r\nConnection: keep-alive\r\n\r\n",
        "GET / HTTP/1.0\r\n\r\n",
        "DELETE /item/7 HTTP/1.1\r\nHost: a\r\nX-Empty:\r\nX-Tabs:\tin\tside\r\n\r\n",
        "OPTIONS /x HTTP/1.1\r\nHost: a\r\nOrigin: https://b.example\r\nCookie: a=1; b=2\r\nCookie: c=3\r\n\r\n",
        "POST /form HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 10.0.0.1, 10.0.0.2\r\n\r\n",
        "PATCH /p HTTP/1.1\r\nHost: a\r\nAuthorization: Basic dXNlcjpwYXNz\r\nExpect: 100-continue\r\n\r\n",
        "GET /~user/!$&'()*+,;=:@ HTTP/1.1\r\nHost: a\r\nX-Odd-Name_1.2~|`^#$%&'*+!: v\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a, b\r\nHost: ,c ,\r\n\r\n",
        "GET / HTTP/1.0\r\nHost: a\r\nConnection: Close\r\n\r\n",
        "GET / HTTP/1.1\r\n\r\n",
        "GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        "GET /chat?room=1 HTTP/1.1\r\nHost: a:8080\r\nConnection: keep-alive, Upgrade\r\nupgrade: WebSocket\r\nOrigin: https://a\r\n\r\n",
        "GET /ws HTTP/1.1\r\nHost: a\r\nConnection:upgrade ,\tKeep-Alive\r\nUpgrade: websocket\r\n\r\n",
    ])
    func agreesWithNIO(_ text: String) throws {
        guard case .request(let head, let length, let vetted) = Self.parse(text) else {
            Issue.record("declined: \(text.debugDescription)")
            return
        }
        #expect(length == text.utf8.count)
        let parts = try Self.nioParts(text)
        guard parts.count == 2, case .head(let nioHead) = parts[0], case .end(nil) = parts[1] else {
            Issue.record("NIO read \(parts) from \(text.debugDescription)")
            return
        }
        #expect(Self.describe(head) == Self.describe(nioHead))
        #expect(vetted == Self.vetted(nioHead), "what the gateway would read from NIO's head")
    }

    /// What the gateway reads from a head NIO decoded, which the fast path hands it instead.
    static func vetted(_ head: HTTPRequestHead) -> SimpleRequestHead.Vetted {
        SimpleRequestHead.Vetted(
            framing: RequestFraming.read(head.headers), keepAlive: head.isKeepAlive, host: head.headers.first(name: "host"),
            offersUpgrade: UpgradeRequest.offersUpgrade(head)
        )
    }

    @Test("a head with one Content-Length is read as NIO's decoder reads it, the body left after it", arguments: [
        ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n", "hello"),
        ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n", ""),
        ("PUT /x HTTP/1.1\r\nHost: a\r\ncontent-length:0012\r\nContent-Type: application/json\r\n\r\n", "{\"a\":[1,2,3]"),
        ("PATCH /p HTTP/1.0\r\nHost: a\r\nContent-Length: 2\r\nExpect: 100-continue\r\nConnection: keep-alive\r\n\r\n", "ok"),
        ("GET /q HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\n\r\n", "x"),
        // NIO's WebSocket client announces an empty body on its upgrade request.
        ("GET / HTTP/1.1\r\nHost: a:1\r\nContent-Length: 0\r\nConnection: upgrade\r\nUpgrade: websocket\r\n"
            + "Sec-WebSocket-Key: F8yxN5c6EfNxEvaeaGj/NA==\r\nSec-WebSocket-Version: 13\r\n\r\n", ""),
    ])
    func bodiesAgreeWithNIO(_ head: String, _ body: String) throws {
        guard case .request(let fast, let length, let vetted) = Self.parse(head + body) else {
            Issue.record("declined: \(head.debugDescription)")
            return
        }
        #expect(length == head.utf8.count)
        #expect(vetted.framing.contentLength == body.utf8.count)
        let parts = try Self.nioParts(head + body)
        guard case .head(let nioHead) = parts.first, case .end(nil) = parts.last else {
            Issue.record("NIO read \(parts) from \(head.debugDescription)")
            return
        }
        #expect(Self.describe(fast) == Self.describe(nioHead))
        #expect(vetted == Self.vetted(nioHead), "what the gateway would read from NIO's head")
    }

    @Test("everything else is declined, to be read by NIO's decoder", arguments: [
        "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
        "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\n\r\nhello",
        "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\nhello",
        "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0x5\r\n\r\nhello",
        "POST / HTTP/1.1\r\nHost: a\r\nContent-Length:\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1234567890123456789\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\r\nTRANSFER-ENCODING: identity\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, Upgrade\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: keep-alive\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\r\nUpgrade: h2c\r\nConnection: Upgrade, HTTP2-Settings\r\nHTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket, h2c\r\nConnection: Upgrade\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nConnection: Upgrade\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade, Upgrade\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade,\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: close, Upgrade\r\n\r\n",
        "GET / HTTP/1.0\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nContent-Length: 1\r\n\r\nx",
        "GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive\r\nConnection: KEEP-ALIVE\r\n\r\n",
        "GET / HTTP/1.0\r\nHost: a\r\nConnection: keep-alive\r\nConnection: close\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\r\nX-Fold: a\r\n b\r\n\r\n",
        "GET / HTTP/1.1\nHost: a\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\n\r\n",
        "GET / HTTP/1.1\r\nHost: a \r\n\r\n",
        "GET / HTTP/1.1\r\nHost : a\r\n\r\n",
        "GET / HTTP/1.1\r\n Host: a\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\u{7F}\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: caf\u{E9}\r\n\r\n",
        "GET / HTTP/1.1\r\nX\u{1}: a\r\n\r\n",
        "GET /a#frag HTTP/1.1\r\nHost: a\r\n\r\n",
        "GET /a\"b HTTP/1.1\r\nHost: a\r\n\r\n",
        "GET http://a/ HTTP/1.1\r\nHost: a\r\n\r\n",
        "OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n",
        "CONNECT a:443 HTTP/1.1\r\nHost: a\r\n\r\n",
        "PROPFIND / HTTP/1.1\r\nHost: a\r\n\r\n",
        "get / HTTP/1.1\r\nHost: a\r\n\r\n",
        "GET  / HTTP/1.1\r\nHost: a\r\n\r\n",
        "GET / HTTP/1.1 \r\nHost: a\r\n\r\n",
        "GET / HTTP/2.0\r\nHost: a\r\n\r\n",
        "GET / HTTP/1.10\r\nHost: a\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\r\n",
        "GET / HTTP/1.1\r\nHost: a\r\n\r",
        "GET / HTT",
        "",
    ])
    func declines(_ text: String) {
        guard case .declined = Self.parse(text) else {
            Issue.record("read by the fast path: \(text.debugDescription)")
            return
        }
    }

    /// SplitMix64: a seeded generator, so a failing mutation can be found again.
    struct SeededGenerator: RandomNumberGenerator {
        var state: UInt64
        mutating func next() -> UInt64 {
            state &+= 0x9E37_79B9_7F4A_7C15
            var z = state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
    }

    @Test("random mutations of simple requests: whatever the fast path reads, NIO's decoder reads the same")
    func mutationsAgreeWithNIO() throws {
        let seeds = [
            "GET /a/b?c=d HTTP/1.1\r\nHost: example.com\r\nUser-Agent: x/1\r\nConnection: keep-alive\r\n\r\n",
            "HEAD / HTTP/1.0\r\nHost: a\r\nAccept: */*\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a,b\r\nConnection: close\r\nConnection: keep-alive\r\n\r\n",
            "POST /f HTTP/1.1\r\nHost: a\r\nContent-Length: 12\r\nContent-Type: text/plain\r\n\r\n",
            "GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\nSec-WebSocket-Version: 13\r\n\r\n",
        ].map { Array($0.utf8) }
        // Bytes where parsers tend to disagree.
        let alphabet: [UInt8] = Array(" \t\r\n:;,/?#%@\"\\aZ0-~".utf8) + [0x00, 0x01, 0x0B, 0x7F, 0x80, 0xC3, 0xFF]
        var random = SeededGenerator(state: 0x5EED)
        var read = 0
        for round in 0..<20_000 {
            var bytes = seeds[round % seeds.count]
            for _ in 0..<Int.random(in: 1...3, using: &random) {
                let index = Int.random(in: 0..<bytes.count, using: &random)
                switch Int.random(in: 0..<3, using: &random) {
                case 0: bytes[index] = alphabet.randomElement(using: &random)!
                case 1: bytes.insert(alphabet.randomElement(using: &random)!, at: index)
                default: if bytes.count > 1 { bytes.remove(at: index) }
                }
            }
            let buffer = ByteBuffer(bytes: bytes)
            guard case .request(let head, let length, let vetted) = buffer.withUnsafeReadableBytes({ SimpleRequestHead.parse($0) }) else { continue }
            read += 1
            let text = String(decoding: bytes, as: UTF8.self)
            // NIO reads the head and the body it announces (filler here, whatever followed).
            let body = String(repeating: "b", count: vetted.framing.contentLength ?? 0)
            let nio = try Self.nioParts(String(decoding: bytes[..<length], as: UTF8.self) + body)
            guard nio.count == (body.isEmpty ? 2 : 3), case .head(let nioHead) = nio.first, case .end(nil) = nio.last else {
                Issue.record("round \(round): the fast path read \(text.debugDescription), NIO read \(nio)")
                continue
            }
            #expect(Self.describe(head) == Self.describe(nioHead), "round \(round): \(text.debugDescription)")
            #expect(vetted == Self.vetted(nioHead), "round \(round): \(text.debugDescription)")
        }
        // Enough mutations kept a readable head for the comparison to mean something.
        #expect(read > 2000, "only \(read) mutated requests were read by the fast path")
    }

    @Test("heads longer than the fast path's limit, or with too many fields, are declined")
    func declinesLongHeads() {
        let long = "GET / HTTP/1.1\r\nHost: a\r\nX-Long: \(String(repeating: "a", count: SimpleRequestHead.maxLength))\r\n\r\n"
        guard case .declined = Self.parse(long) else { Issue.record("long head read"); return }
        let many = "GET / HTTP/1.1\r\n" + (0...SimpleRequestHead.maxFields).map { "X-\($0): v\r\n" }.joined() + "\r\n"
        guard case .declined = Self.parse(many) else { Issue.record("head with too many fields read"); return }
    }

    /// A pipeline as a client connection has it: the fast path, then `reader`, which takes the
    /// request parts (a collector, or a probe that acts on them), on a connected channel.
    static func pipeline(endingIn reader: some ChannelInboundHandler) throws -> EmbeddedChannel {
        let channel = EmbeddedChannel()
        try channel.pipeline.syncOperations.addHandler(RequestFastPath(gateway: nil))
        try channel.pipeline.syncOperations.addHandler(reader)
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
        return channel
    }

    static func pipeline() throws -> (EmbeddedChannel, Collector) {
        let collector = Collector()
        return (try pipeline(endingIn: collector), collector)
    }

    static func summary(_ parts: [HTTPServerRequestPart]) -> [String] {
        parts.map { part in
            switch part {
            case .head(let head): "head \(head.method.rawValue) \(head.uri)"
            case .body(let body): "body \(String(buffer: body))"
            case .end: "end"
            }
        }
    }

    @Test("pipelined requests keep their order when the fast path hands over to NIO's decoder mid-read")
    func handsOverInOrder() throws {
        let (channel, collector) = try Self.pipeline()
        try channel.writeInbound(ByteBuffer(string:
            "GET /1 HTTP/1.1\r\nHost: a\r\n\r\nGET /2 HTTP/1.1\r\nHost: a\r\n\r\n"
            + "POST /3 HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nbody\r\n0\r\n\r\n"
            + "GET /4 HTTP/1.1\r\nHost: a\r\n\r\n"))
        // Bodies may arrive in more than one part; joined, they are the body sent.
        let summary = Self.summary(collector.parts).reduce(into: [String]()) { joined, line in
            if line.hasPrefix("body "), let last = joined.last, last.hasPrefix("body ") {
                joined[joined.count - 1] = last + line.dropFirst(5)
            } else {
                joined.append(line)
            }
        }
        #expect(summary == ["head GET /1", "end", "head GET /2", "end", "head POST /3", "body body", "end", "head GET /4", "end"])
        // The fast path has left, and NIO's decoder reads what follows.
        #expect(throws: (any Error).self) { try channel.pipeline.syncOperations.handler(type: RequestFastPath.self) }
        #expect((try? channel.pipeline.syncOperations.handler(type: ByteToMessageHandler<HTTPRequestDecoder>.self)) != nil)
        try channel.writeInbound(ByteBuffer(string: "GET /5 HTTP/1.1\r\nHost: a\r\n\r\n"))
        #expect(Self.summary(collector.parts).suffix(2) == ["head GET /5", "end"])
        _ = try? channel.finish()
    }

    /// Collects the bytes that reach the end of a pipeline, as the relay's handler would.
    final class ByteCollector: ChannelInboundHandler {
        typealias InboundIn = ByteBuffer
        var bytes = ByteBuffer()
        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            var buffer = unwrapInboundIn(data)
            bytes.writeBuffer(&buffer)
        }
    }

    @Test("after an upgrade head nothing is read as HTTP; what followed it goes to the relay in order, and the fast path leaves")
    func upgradeKeepsBytesForTheRelay() throws {
        let fastPath = RequestFastPath(gateway: nil)
        let collector = Collector()
        let channel = EmbeddedChannel()
        try channel.pipeline.syncOperations.addHandler(fastPath)
        try channel.pipeline.syncOperations.addHandler(collector)
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
        let head = "GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
        // A frame right behind the head, then bytes that would parse as a request.
        try channel.writeInbound(ByteBuffer(string: head + "\u{81}\u{2}hi"))
        try channel.writeInbound(ByteBuffer(string: "GET /next HTTP/1.1\r\nHost: a\r\n\r\n"))
        #expect(Self.summary(collector.parts) == ["head GET /ws", "end"])
        // The gateway's switch to the relay: its handler goes in behind, the HTTP reader leaves.
        let relay = ByteCollector()
        try channel.pipeline.syncOperations.addHandler(relay)
        try channel.pipeline.syncOperations.removeHandler(collector).wait()
        fastPath.handOverToRelay()
        #expect(String(buffer: relay.bytes) == "\u{81}\u{2}hiGET /next HTTP/1.1\r\nHost: a\r\n\r\n")
        #expect(throws: (any Error).self) { try channel.pipeline.syncOperations.handler(type: RequestFastPath.self) }
        try channel.writeInbound(ByteBuffer(string: "more"))
        #expect(String(buffer: relay.bytes).hasSuffix("more"))
        _ = try? channel.finish()
    }

    @Test("an upgrade head answered without a relay keeps what followed it and reads none of it as HTTP")
    func upgradeWithoutRelay() throws {
        let (channel, collector) = try Self.pipeline()
        try channel.writeInbound(ByteBuffer(string:
            "GET /1 HTTP/1.1\r\nHost: a\r\n\r\nGET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
            + "GET /3 HTTP/1.1\r\nHost: a\r\n\r\n"))
        try channel.writeInbound(ByteBuffer(string: "POST /4 HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"))
        #expect(Self.summary(collector.parts) == ["head GET /1", "end", "head GET /ws", "end"])
        // Neither NIO's decoder nor anything else reads on.
        #expect((try? channel.pipeline.syncOperations.handler(type: RequestFastPath.self)) != nil)
        #expect((try? channel.pipeline.syncOperations.handler(type: ByteToMessageHandler<HTTPRequestDecoder>.self)) == nil)
        _ = try? channel.finish()
    }

    @Test("a head split across reads is finished by NIO's decoder; simple heads stay on the fast path")
    func splitHead() throws {
        let (channel, collector) = try Self.pipeline()
        try channel.writeInbound(ByteBuffer(string: "GET /1 HTTP/1.1\r\nHost: a\r\n\r\n"))
        try channel.writeInbound(ByteBuffer(string: "GET /2 HTTP/1.1\r\nHost: a\r\n\r\n"))
        #expect((try? channel.pipeline.syncOperations.handler(type: RequestFastPath.self)) != nil)
        try channel.writeInbound(ByteBuffer(string: "GET /3 HTTP/1.1\r\nHo"))
        try channel.writeInbound(ByteBuffer(string: "st: a\r\n\r\n"))
        #expect(Self.summary(collector.parts) == ["head GET /1", "end", "head GET /2", "end", "head GET /3", "end"])
        #expect(throws: (any Error).self) { try channel.pipeline.syncOperations.handler(type: RequestFastPath.self) }
        _ = try? channel.finish()
    }

    @Test("Content-Length bodies pass on the fast path as they arrive, across reads, and the next head is read after them")
    func bodiesStayOnTheFastPath() throws {
        let (channel, collector) = try Self.pipeline()
        try channel.writeInbound(ByteBuffer(string: "POST /1 HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\n\r\nhel"))
        try channel.writeInbound(ByteBuffer(string: "lo w"))
        try channel.writeInbound(ByteBuffer(string: "orldGET /2 HTTP/1.1\r\nHost: a\r\n\r\nPUT /3 HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n"))
        try channel.writeInbound(ByteBuffer(string: "POST /4 HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nokGET /5 HTTP/1.1\r\nHost: a\r\n\r\n"))
        #expect(Self.summary(collector.parts) == [
            "head POST /1", "body hel", "body lo w", "body orld", "end", "head GET /2", "end", "head PUT /3", "end",
            "head POST /4", "body ok", "end", "head GET /5", "end",
        ])
        #expect((try? channel.pipeline.syncOperations.handler(type: RequestFastPath.self)) != nil)
        _ = try? channel.finish()
    }

    /// Records errors and events that reach the end of the pipeline.
    final class EventCollector: ChannelInboundHandler {
        typealias InboundIn = HTTPServerRequestPart
        var parts: [HTTPServerRequestPart] = []
        var errors: [any Error] = []
        var inputClosed = false
        func channelRead(context: ChannelHandlerContext, data: NIOAny) { parts.append(unwrapInboundIn(data)) }
        func errorCaught(context: ChannelHandlerContext, error: any Error) { errors.append(error) }
        func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
            if let event = event as? ChannelEvent, event == .inputClosed { inputClosed = true }
        }
    }

    @Test("a half-close inside an announced body is a parser error, as from NIO's decoder; after a whole body it is not")
    func halfCloseInsideBody() throws {
        for (bytes, truncated) in [("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhel", true),
                                   ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello", false)] {
            let collector = EventCollector()
            let channel = try Self.pipeline(endingIn: collector)
            try channel.writeInbound(ByteBuffer(string: bytes))
            channel.pipeline.fireUserInboundEventTriggered(ChannelEvent.inputClosed)
            #expect(collector.inputClosed)
            #expect(collector.errors.contains { ($0 as? HTTPParserError) == .invalidEOFState } == truncated, "\(bytes.debugDescription)")
            _ = try? channel.finish()
        }
    }

    /// Answers a decoder error the way a failed write makes NIO behave: it reads the socket
    /// again at once, from inside the error's handling, while the fast path is still leaving.
    final class ReadsAgainOnError: ChannelInboundHandler {
        typealias InboundIn = HTTPServerRequestPart
        var parts: [HTTPServerRequestPart] = []
        var errors = 0
        let more: ByteBuffer
        init(more: ByteBuffer) { self.more = more }
        func channelRead(context: ChannelHandlerContext, data: NIOAny) { parts.append(unwrapInboundIn(data)) }
        func errorCaught(context: ChannelHandlerContext, error: any Error) {
            errors += 1
            if errors == 1 { context.pipeline.syncOperations.fireChannelRead(NIOAny(more)) }
        }
    }

    @Test("bytes read again while the fast path steps aside go to NIO's decoder, not into a second hand-over")
    func reentrantReadWhileSteppingAside() throws {
        let probe = ReadsAgainOnError(more: ByteBuffer(string: "\u{1}\u{2} garbage\r\n\r\n"))
        let channel = try Self.pipeline(endingIn: probe)
        // A malformed head: the fast path declines it, NIO's decoder fails on it, and the probe
        // reads again from the head of the pipeline before the fast path has left.
        _ = try? channel.writeInbound(ByteBuffer(string: "GET / HTTP/1.1\r\nHost: a\r\nBad Name: x\r\n\r\n"))
        #expect(probe.errors >= 1 && probe.parts.isEmpty)
        #expect(throws: (any Error).self) { try channel.pipeline.syncOperations.handler(type: RequestFastPath.self) }
        _ = try? channel.finish()
    }

    /// Reads the socket again from the head of the pipeline while the first head is handed
    /// on, as NIO does when a write made there fails: the bytes it brings come after the rest
    /// of the read being handled.
    final class ReadsAgainOnFirstHead: ChannelInboundHandler {
        typealias InboundIn = HTTPServerRequestPart
        var parts: [HTTPServerRequestPart] = []
        let more: [ByteBuffer]
        init(more: [ByteBuffer]) { self.more = more }
        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            parts.append(unwrapInboundIn(data))
            guard parts.count == 1 else { return }
            for bytes in more { context.pipeline.syncOperations.fireChannelRead(NIOAny(bytes)) }
        }
    }

    @Test("bytes read re-entrantly while a head is handed on wait behind the rest of the read, in order")
    func reentrantReadKeepsOrder() throws {
        let probe = ReadsAgainOnFirstHead(more: [
            ByteBuffer(string: "GET /3 HTTP/1.1\r\nHost: a\r\n\r\n"), ByteBuffer(string: "GET /4 HTTP/1.1\r\nHost: a\r\n\r\n"),
        ])
        let channel = try Self.pipeline(endingIn: probe)
        try channel.writeInbound(ByteBuffer(string: "GET /1 HTTP/1.1\r\nHost: a\r\n\r\nGET /2 HTTP/1.1\r\nHost: a\r\n\r\n"))
        #expect(Self.summary(probe.parts) == ["head GET /1", "end", "head GET /2", "end", "head GET /3", "end", "head GET /4", "end"])
        #expect((try? channel.pipeline.syncOperations.handler(type: RequestFastPath.self)) != nil)
        _ = try? channel.finish()
    }

    @Test("bytes read re-entrantly that the fast path declines reach NIO's decoder after the rest of the read")
    func reentrantReadSteppingAsideKeepsOrder() throws {
        let probe = ReadsAgainOnFirstHead(more: [ByteBuffer(string: "POST /3 HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n")])
        let channel = try Self.pipeline(endingIn: probe)
        try channel.writeInbound(ByteBuffer(string: "GET /1 HTTP/1.1\r\nHost: a\r\n\r\nGET /2 HTTP/1.1\r\nHost: a\r\n\r\n"))
        #expect(Self.summary(probe.parts) == ["head GET /1", "end", "head GET /2", "end", "head POST /3", "body ok", "end"])
        #expect(throws: (any Error).self) { try channel.pipeline.syncOperations.handler(type: RequestFastPath.self) }
        _ = try? channel.finish()
    }

    @Test("a malformed request after simple ones reaches NIO's decoder and fails there")
    func malformedAfterSimple() throws {
        let (channel, collector) = try Self.pipeline()
        #expect(throws: HTTPParserError.self) {
            try channel.writeInbound(ByteBuffer(string:
                "GET /1 HTTP/1.1\r\nHost: a\r\n\r\nPOST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nx"))
        }
        #expect(Self.summary(collector.parts).prefix(2) == ["head GET /1", "end"])
        _ = try? channel.finish()
    }
}
