import NIOCore
import NIOEmbedded
import NIOHPACK
import NIOHTTP1
import NIOHTTP2
import Testing
@testable import Sluice

/// The HTTP/2 stream codecs and the GOAWAY watcher on `EmbeddedChannel`s, frame by frame.
@Suite("HTTP/2 codecs")
struct HTTP2CodecTests {
    static func headers(_ fields: [(String, String)], endStream: Bool = false) -> HTTP2Frame.FramePayload {
        .headers(.init(headers: HPACKHeaders(fields), endStream: endStream))
    }

    @Test("a HEADERS frame becomes the request head: pseudo-headers, :protocol kept, cookies joined, body framing")
    func requestHead() throws {
        let connect = HTTP2RequestCodec.requestHead(HPACKHeaders([
            (":method", "CONNECT"), (":protocol", "websocket"), (":scheme", "https"), (":path", "/chat?x=1"), (":authority", "example.test"),
            ("cookie", "a=1"), ("sec-websocket-version", "13"), ("cookie", "b=2"),
        ]), endStream: false)
        #expect(connect.head.method == .CONNECT)
        #expect(connect.head.uri == "/chat?x=1")
        #expect(connect.head.version == .http2)
        #expect(connect.host == "example.test")
        #expect(connect.extendedConnect == "websocket")
        #expect(connect.head.headers["cookie"] == ["a=1; b=2"])
        #expect(connect.problem == nil)
        // No length and not ended: the backend gets HTTP/1.1 chunks.
        #expect(connect.framing.chunked)

        let get = HTTP2RequestCodec.requestHead(HPACKHeaders([(":method", "GET"), (":scheme", "https"), (":path", "/"), (":authority", "a.test")]), endStream: true)
        #expect(!get.framing.chunked && !get.framing.hasBody && get.endStream)
        let sized = HTTP2RequestCodec.requestHead(HPACKHeaders([(":method", "POST"), (":path", "/"), (":authority", "a.test"), ("content-length", "5")]), endStream: false)
        #expect(!sized.framing.chunked && sized.framing.contentLength == 5)
        let mismatch = HTTP2RequestCodec.requestHead(HPACKHeaders([(":method", "GET"), (":path", "/"), (":authority", "a.test"), ("host", "b.test")]), endStream: true)
        #expect(mismatch.problem != nil)
        let hostOnly = HTTP2RequestCodec.requestHead(HPACKHeaders([(":method", "GET"), (":path", "/"), ("host", "b.test")]), endStream: true)
        #expect(hostOnly.host == "b.test" && hostOnly.problem == nil)
    }

    @Test("inbound frames become head, body and end; trailers end the request")
    func inbound() throws {
        let channel = EmbeddedChannel(handler: HTTP2RequestCodec())
        try channel.writeInbound(Self.headers([(":method", "POST"), (":path", "/u"), (":authority", "a")]))
        try channel.writeInbound(HTTP2Frame.FramePayload.data(.init(data: .byteBuffer(ByteBuffer(string: "abc")))))
        try channel.writeInbound(Self.headers([("x-trailer", "1")], endStream: true))
        var parts: [String] = []
        while let part = try channel.readInbound(as: HTTP2RequestPart.self) {
            switch part {
            case .head(let head): parts.append("head \(head.head.uri)")
            case .body(let body): parts.append("body \(body.readableBytes)")
            case .end: parts.append("end")
            }
        }
        #expect(parts == ["head /u", "body 3", "end"])
        _ = try channel.finish()

        // A HEADERS frame that ends the stream is the whole request: the head says so, no `.end`.
        let get = EmbeddedChannel(handler: HTTP2RequestCodec())
        try get.writeInbound(Self.headers([(":method", "GET"), (":path", "/g"), (":authority", "a")], endStream: true))
        guard case .head(let head) = try #require(try get.readInbound(as: HTTP2RequestPart.self)) else {
            Issue.record("not a head")
            return
        }
        #expect(head.endStream && head.head.uri == "/g")
        #expect(try get.readInbound(as: HTTP2RequestPart.self) == nil)
        _ = try get.finish()
    }

    @Test("responses become HEADERS and DATA without connection-specific fields; a bodiless answer is one HEADERS frame; 100 stays interim")
    func outbound() throws {
        let channel = EmbeddedChannel(handler: HTTP2RequestCodec())
        var head = HTTPResponseHead(version: .http1_1, status: .ok)
        head.headers.add(name: "Content-Type", value: "text/plain")
        head.headers.add(name: "Connection", value: "close, X-Hop")
        head.headers.add(name: "X-Hop", value: "1")
        head.headers.add(name: "Keep-Alive", value: "timeout=5")
        head.headers.add(name: "Transfer-Encoding", value: "chunked")
        try channel.writeOutbound(HTTPServerResponsePart.head(HTTPResponseHead(version: .http1_1, status: .continue)))
        try channel.writeOutbound(HTTPServerResponsePart.head(head))
        try channel.writeOutbound(HTTPServerResponsePart.body(.byteBuffer(ByteBuffer(string: "hi"))))
        try channel.writeOutbound(HTTPServerResponsePart.end(nil))
        var frames: [String] = []
        while let payload = try channel.readOutbound(as: HTTP2Frame.FramePayload.self) {
            switch payload {
            case .headers(let headers):
                frames.append("HEADERS \(headers.headers.map { "\($0.name)=\($0.value)" }.joined(separator: ",")) end=\(headers.endStream)")
            case .data(let data):
                frames.append("DATA \(data.data.readableBytes) end=\(data.endStream)")
            default:
                frames.append("other")
            }
        }
        #expect(frames == [
            "HEADERS :status=100 end=false", "HEADERS :status=200,content-type=text/plain end=false", "DATA 2 end=false", "DATA 0 end=true",
        ])
        // Body and end written together: the last DATA frame ends the stream, no empty one follows.
        let together = EmbeddedChannel(handler: HTTP2RequestCodec())
        together.write(HTTPServerResponsePart.head(HTTPResponseHead(version: .http1_1, status: .ok)), promise: nil)
        together.write(HTTPServerResponsePart.body(.byteBuffer(ByteBuffer(string: "ab"))), promise: nil)
        var bodyWritten = false
        together.write(HTTPServerResponsePart.body(.byteBuffer(ByteBuffer(string: "cde")))).assumeIsolated().whenSuccess { bodyWritten = true }
        try together.writeAndFlush(HTTPServerResponsePart.end(nil)).wait()
        #expect(bodyWritten, "the held body part's promise completes with the frame that carried it")
        var joined: [String] = []
        while let payload = try together.readOutbound(as: HTTP2Frame.FramePayload.self) {
            switch payload {
            case .headers(let headers): joined.append("HEADERS end=\(headers.endStream)")
            case .data(let data): joined.append("DATA \(data.data.readableBytes) end=\(data.endStream)")
            default: joined.append("other")
            }
        }
        #expect(joined == ["HEADERS end=false", "DATA 2 end=false", "DATA 3 end=true"])
        // A body part held when the stream closes fails its promise rather than leaving it open.
        let dropped = EmbeddedChannel(handler: HTTP2RequestCodec())
        dropped.write(HTTPServerResponsePart.head(HTTPResponseHead(version: .http1_1, status: .ok)), promise: nil)
        let lost = dropped.write(HTTPServerResponsePart.body(.byteBuffer(ByteBuffer(string: "x"))))
        _ = try? dropped.close().wait()
        #expect(throws: (any Error).self) { try lost.wait() }

        // Written without a flush between, as the gateway writes an answer.
        channel.write(HTTPServerResponsePart.head(HTTPResponseHead(version: .http1_1, status: .noContent)), promise: nil)
        try channel.writeAndFlush(HTTPServerResponsePart.end(nil)).wait()
        let single = try #require(try channel.readOutbound(as: HTTP2Frame.FramePayload.self))
        guard case .headers(let only) = single else {
            Issue.record("not HEADERS: \(single)")
            return
        }
        #expect(only.endStream)
        #expect(try channel.readOutbound(as: HTTP2Frame.FramePayload.self) == nil)
        _ = try channel.finish()
    }

    @Test("the tunnel: DATA in is the relay's bytes, writes go out as DATA; the client's END_STREAM is answered with ours")
    func tunnel() throws {
        let channel = EmbeddedChannel(handler: HTTP2TunnelCodec())
        try channel.writeInbound(HTTP2Frame.FramePayload.data(.init(data: .byteBuffer(ByteBuffer(string: "frame")))))
        #expect(try channel.readInbound(as: ByteBuffer.self) == ByteBuffer(string: "frame"))
        try channel.writeOutbound(ByteBuffer(string: "back"))
        guard case .data(let out) = try #require(try channel.readOutbound(as: HTTP2Frame.FramePayload.self)) else {
            Issue.record("not DATA")
            return
        }
        #expect(out.data.readableBytes == 4 && !out.endStream)
        try channel.writeInbound(HTTP2Frame.FramePayload.data(.init(data: .byteBuffer(ByteBuffer()), endStream: true)))
        guard case .data(let end) = try #require(try channel.readOutbound(as: HTTP2Frame.FramePayload.self)) else {
            Issue.record("not DATA")
            return
        }
        #expect(end.endStream)
        // Nothing goes out after END_STREAM.
        #expect(throws: (any Error).self) { try channel.writeOutbound(ByteBuffer(string: "late")) }
        _ = try? channel.finish()
    }

    @Test("the relay's close ends Sluice's side with END_STREAM, then resets after the linger if the client never ends its own")
    func tunnelClose() throws {
        let channel = EmbeddedChannel(handler: HTTP2TunnelCodec())
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
        channel.close(promise: nil)
        guard case .data(let end) = try #require(try channel.readOutbound(as: HTTP2Frame.FramePayload.self)) else {
            Issue.record("not DATA")
            return
        }
        #expect(end.endStream)
        #expect(channel.isActive, "the stream stays for the client's END_STREAM")
        channel.embeddedEventLoop.advanceTime(by: HTTP2TunnelCodec.linger)
        #expect(!channel.isActive)
    }

    static func frame(type: UInt8, payload: [UInt8]) -> [UInt8] {
        [UInt8(payload.count >> 16 & 0xFF), UInt8(payload.count >> 8 & 0xFF), UInt8(payload.count & 0xFF), type, 0, 0, 0, 0, 0] + payload
    }

    @Test("a GOAWAY with an error closes the connection once written, wherever the buffers split the frames; NO_ERROR does not")
    func goAwayWatcher() throws {
        let settings = Self.frame(type: 0x4, payload: [0, 3, 0, 0, 0, 100])
        let data = Self.frame(type: 0x0, payload: Array(repeating: 7, count: 300))
        let graceful = Self.frame(type: 0x7, payload: [0x7F, 0xFF, 0xFF, 0xFF, 0, 0, 0, 0])
        let calm = Self.frame(type: 0x7, payload: [0, 0, 0, 0, 0, 0, 0, 0x0B] + Array("slow down".utf8))
        for split in [1, 5, 9, 13, 64, 1000] {
            var codes: [UInt32] = []
            let channel = EmbeddedChannel(handler: HTTP2GoAwayWatcher { codes.append($0) })
            try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
            let stream = settings + data + graceful + data
            for start in stride(from: 0, to: stream.count, by: split) {
                try channel.writeOutbound(ByteBuffer(bytes: stream[start..<min(start + split, stream.count)]))
            }
            #expect(codes.isEmpty && channel.isActive, "split \(split)")
            for start in stride(from: 0, to: calm.count, by: split) {
                _ = try? channel.writeOutbound(ByteBuffer(bytes: calm[start..<min(start + split, calm.count)]))
            }
            #expect(codes == [0x0B], "split \(split)")
            #expect(!channel.isActive, "split \(split)")
        }
    }
}
