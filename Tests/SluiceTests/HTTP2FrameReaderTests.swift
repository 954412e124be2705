import NIOCore
import NIOEmbedded
import NIOHPACK
import NIOHTTP2
import Testing

@testable import Sluice

/// HTTP/2's frame layer of Sluice's own, with no sockets: what the writer writes reads back the
/// same whole and a byte at a time; every rule RFC 9113 sets on a frame by itself is refused with
/// the error it names; and NIOHTTP2 (which no one here wrote) agrees with both halves.
@Suite("HTTP/2 frame reader and writer")
struct HTTP2FrameReaderTests {
    /// Reads every frame of `bytes` fed in pieces of `piece` bytes (all at once for 0).
    static func readAll(_ bytes: ByteBuffer, piece: Int = 0, reader: HTTP2FrameReader = HTTP2FrameReader()) throws(HTTP2WireError) -> [HTTP2FrameReader.Read] {
        var reader = reader
        var reads: [HTTP2FrameReader.Read] = []
        var rest = bytes
        while rest.readableBytes > 0 {
            reader.receive(rest.readSlice(length: piece == 0 ? rest.readableBytes : min(piece, rest.readableBytes))!)
            while let read = try reader.next() { reads.append(read) }
        }
        #expect(reader.unread == 0)
        return reads
    }

    /// The preface and an empty SETTINGS, which every client connection starts with.
    static func opening() -> ByteBuffer {
        var out = ByteBuffer(bytes: HTTP2FrameReader.preface)
        HTTP2FrameWriter.settings([], to: &out)
        return out
    }

    /// A raw frame, written by hand so that it can break the rules.
    static func frame(_ type: UInt8, flags: UInt8 = 0, stream: UInt32, _ payload: [UInt8]) -> ByteBuffer {
        var out = ByteBuffer()
        out.writeInteger(UInt16(payload.count >> 8))
        out.writeInteger(UInt8(payload.count & 0xff))
        out.writeInteger(type)
        out.writeInteger(flags)
        out.writeInteger(stream)
        out.writeBytes(payload)
        return out
    }

    /// The error reading `frames` after the opening ends with.
    static func failure(_ frames: ByteBuffer..., reader: HTTP2FrameReader = HTTP2FrameReader()) -> HTTP2WireError? {
        var bytes = opening()
        for var frame in frames { bytes.writeBuffer(&frame) }
        do {
            _ = try readAll(bytes, reader: reader)
            return nil
        } catch {
            return error
        }
    }

    @Test("every frame the writer writes reads back the same, whole and one byte at a time; blocks and DATA split at the frame size")
    func roundTrip() throws {
        var out = Self.opening()
        let block = ByteBuffer(bytes: (0..<40_000).map { UInt8(truncatingIfNeeded: $0) })
        try HTTP2FrameWriter.headers(stream: 1, endStream: false, maxFrameSize: 16_384, to: &out) { (buffer: inout ByteBuffer) throws(HTTP2WireError) in
            buffer.writeImmutableBuffer(block)
        }
        let body = ByteBuffer(bytes: (0..<20_000).map { UInt8(truncatingIfNeeded: $0 * 7) })
        HTTP2FrameWriter.data(stream: 1, payload: body, endStream: true, maxFrameSize: 16_384, to: &out)
        HTTP2FrameWriter.data(stream: 3, payload: ByteBuffer(), endStream: true, maxFrameSize: 16_384, to: &out)
        HTTP2FrameWriter.settings([HTTP2WireSetting(HTTP2WireSetting.initialWindowSize, 1 << 20), HTTP2WireSetting(0x99, 7)], to: &out)
        HTTP2FrameWriter.settingsAck(to: &out)
        HTTP2FrameWriter.ping(opaque: 0x0102_0304_0506_0708, ack: false, to: &out)
        HTTP2FrameWriter.windowUpdate(stream: 0, increment: 65_536, to: &out)
        HTTP2FrameWriter.resetStream(stream: 5, code: .cancel, to: &out)
        HTTP2FrameWriter.goAway(lastStream: 5, code: .noError, debug: "draining", to: &out)
        let expected: [HTTP2FrameReader.Read] = [
            .frame(.settings([])),
            .frame(.headers(stream: 1, block: block, endStream: false, priority: nil)),
            .frame(.data(stream: 1, payload: body.getSlice(at: 0, length: 16_384)!, endStream: false, flowControlled: 16_384)),
            .frame(.data(stream: 1, payload: body.getSlice(at: 16_384, length: 3_616)!, endStream: true, flowControlled: 3_616)),
            .frame(.data(stream: 3, payload: ByteBuffer(), endStream: true, flowControlled: 0)),
            .frame(.settings([HTTP2WireSetting(HTTP2WireSetting.initialWindowSize, 1 << 20), HTTP2WireSetting(0x99, 7)])),
            .frame(.settingsAck),
            .frame(.ping(opaque: 0x0102_0304_0506_0708, ack: false)),
            .frame(.windowUpdate(stream: 0, increment: 65_536)),
            .frame(.resetStream(stream: 5, code: HTTP2WireError.Code.cancel.rawValue)),
            .frame(.goAway(lastStream: 5, code: 0, debug: ByteBuffer(string: "draining"))),
        ]
        #expect(try Self.readAll(out) == expected)
        #expect(try Self.readAll(out, piece: 1) == expected)
        #expect(try Self.readAll(out, piece: 4_099) == expected)
    }

    @Test("padding is removed and still charged to flow control; priority fields are read; unknown frame types and flags are skipped")
    func paddingPriorityUnknown() throws {
        var bytes = Self.opening()
        var padded = Self.frame(0x0, flags: 0x8 | 0x1, stream: 1, [3, 0x61, 0x62, 0, 0, 0])
        var prioritised = Self.frame(0x1, flags: 0x4 | 0x8 | 0x20, stream: 3, [2, 0x80, 0, 0, 1, 15, 0x82, 0, 0])
        var unknown = Self.frame(0xfa, flags: 0xff, stream: 9, [1, 2, 3])
        var reserved = Self.frame(0x8, flags: 0xf0, stream: 0x8000_0003, [0x80, 0, 0, 10])
        bytes.writeBuffer(&padded)
        bytes.writeBuffer(&prioritised)
        bytes.writeBuffer(&unknown)
        bytes.writeBuffer(&reserved)
        #expect(try Self.readAll(bytes, piece: 1) == [
            .frame(.settings([])),
            .frame(.data(stream: 1, payload: ByteBuffer(string: "ab"), endStream: true, flowControlled: 6)),
            .frame(.headers(stream: 3, block: ByteBuffer(bytes: [0x82]), endStream: false, priority: HTTP2WirePriority(dependency: 1, exclusive: true, weight: 15))),
            .frame(.windowUpdate(stream: 3, increment: 10)),
        ])
    }

    @Test("the preface is required, whole, before anything; the first frame must be SETTINGS")
    func preface() throws {
        var reader = HTTP2FrameReader()
        reader.receive(ByteBuffer(bytes: HTTP2FrameReader.preface.prefix(10)))
        #expect(try reader.next() == nil)
        var http1 = HTTP2FrameReader()
        http1.receive(ByteBuffer(string: "GET / HTTP/1.1\r\n"))
        #expect(throws: HTTP2WireError.connection(.protocolError, "the connection does not start with the HTTP/2 preface")) { try http1.next() }
        var ping = ByteBuffer(bytes: HTTP2FrameReader.preface)
        var frame = Self.frame(0x6, stream: 0, [0, 0, 0, 0, 0, 0, 0, 0])
        ping.writeBuffer(&frame)
        #expect(throws: HTTP2WireError.self) { try Self.readAll(ping) }
        do {
            _ = try Self.readAll(ping)
        } catch {
            #expect(error.code == .protocolError && error.stream == nil)
        }
        // With the preface read elsewhere, frames start at once.
        #expect(try Self.readAll(Self.frame(0x4, stream: 0, []), reader: HTTP2FrameReader(expectingPreface: false)) == [.frame(.settings([]))])
    }

    @Test("each rule on a frame by itself gives RFC 9113's error, for the connection or for the stream")
    func rules() {
        typealias E = HTTP2WireError.Code
        let cases: [(String, ByteBuffer, E, UInt32?)] = [
            ("DATA on stream 0", Self.frame(0x0, stream: 0, [1]), .protocolError, nil),
            ("DATA padding past its end", Self.frame(0x0, flags: 0x8, stream: 1, [4, 1, 2, 3]), .protocolError, nil),
            ("DATA padded with no pad length", Self.frame(0x0, flags: 0x8, stream: 1, []), .frameSizeError, nil),
            ("HEADERS on stream 0", Self.frame(0x1, flags: 0x4, stream: 0, [0x82]), .protocolError, nil),
            ("HEADERS too short for priority", Self.frame(0x1, flags: 0x24, stream: 1, [0, 0, 1]), .frameSizeError, nil),
            ("HEADERS padding past its end", Self.frame(0x1, flags: 0xc, stream: 1, [2, 0x82]), .protocolError, nil),
            ("PRIORITY of 4 bytes", Self.frame(0x2, stream: 1, [0, 0, 0, 3]), .frameSizeError, 1),
            ("PRIORITY on itself", Self.frame(0x2, stream: 5, [0, 0, 0, 5, 16]), .protocolError, 5),
            ("PRIORITY on stream 0", Self.frame(0x2, stream: 0, [0, 0, 0, 3, 16]), .protocolError, nil),
            ("RST_STREAM of 3 bytes", Self.frame(0x3, stream: 1, [0, 0, 8]), .frameSizeError, nil),
            ("RST_STREAM on stream 0", Self.frame(0x3, stream: 0, [0, 0, 0, 8]), .protocolError, nil),
            ("SETTINGS on a stream", Self.frame(0x4, stream: 1, []), .protocolError, nil),
            ("SETTINGS of 7 bytes", Self.frame(0x4, stream: 0, [0, 3, 0, 0, 0, 100, 0]), .frameSizeError, nil),
            ("SETTINGS ACK with a payload", Self.frame(0x4, flags: 0x1, stream: 0, [0, 3, 0, 0, 0, 100]), .frameSizeError, nil),
            ("ENABLE_PUSH of 2", Self.frame(0x4, stream: 0, [0, 2, 0, 0, 0, 2]), .protocolError, nil),
            ("INITIAL_WINDOW_SIZE of 2^31", Self.frame(0x4, stream: 0, [0, 4, 0x80, 0, 0, 0]), .flowControlError, nil),
            ("MAX_FRAME_SIZE of 16383", Self.frame(0x4, stream: 0, [0, 5, 0, 0, 0x3f, 0xff]), .protocolError, nil),
            ("MAX_FRAME_SIZE of 2^24", Self.frame(0x4, stream: 0, [0, 5, 1, 0, 0, 0]), .protocolError, nil),
            ("ENABLE_CONNECT_PROTOCOL of 2", Self.frame(0x4, stream: 0, [0, 8, 0, 0, 0, 2]), .protocolError, nil),
            ("PUSH_PROMISE from a client", Self.frame(0x5, flags: 0x4, stream: 1, [0, 0, 0, 2, 0x82]), .protocolError, nil),
            ("PING of 7 bytes", Self.frame(0x6, stream: 0, [0, 0, 0, 0, 0, 0, 0]), .frameSizeError, nil),
            ("PING on a stream", Self.frame(0x6, stream: 1, [0, 0, 0, 0, 0, 0, 0, 0]), .protocolError, nil),
            ("GOAWAY of 7 bytes", Self.frame(0x7, stream: 0, [0, 0, 0, 0, 0, 0, 0]), .frameSizeError, nil),
            ("GOAWAY on a stream", Self.frame(0x7, stream: 1, [0, 0, 0, 0, 0, 0, 0, 0]), .protocolError, nil),
            ("WINDOW_UPDATE of 5 bytes", Self.frame(0x8, stream: 0, [0, 0, 0, 1, 0]), .frameSizeError, nil),
            ("WINDOW_UPDATE of 0 for the connection", Self.frame(0x8, stream: 0, [0, 0, 0, 0]), .protocolError, nil),
            ("WINDOW_UPDATE of 0 for a stream", Self.frame(0x8, stream: 7, [0x80, 0, 0, 0]), .protocolError, 7),
            ("CONTINUATION with no block open", Self.frame(0x9, flags: 0x4, stream: 1, [0x82]), .protocolError, nil),
            ("a frame over the frame size", Self.frame(0x0, stream: 1, [UInt8](repeating: 0, count: 16_385)), .frameSizeError, nil),
        ]
        for (name, frame, code, stream) in cases {
            if let stream {
                var bytes = Self.opening()
                var frame = frame
                var after = Self.frame(0x6, stream: 0, [0, 0, 0, 0, 0, 0, 0, 9])
                bytes.writeBuffer(&frame)
                bytes.writeBuffer(&after)
                // A stream error: the error, then reading goes on.
                let reads = try? Self.readAll(bytes)
                #expect(reads?.count == 3, "\(name)")
                if case .streamError(let error) = reads?[1] {
                    #expect(error.code == code && error.stream == stream, "\(name): \(error)")
                } else {
                    Issue.record("\(name): \(String(describing: reads))")
                }
                #expect(reads?.last == .frame(.ping(opaque: 9, ack: false)), "\(name)")
            } else {
                let error = Self.failure(frame)
                #expect(error?.code == code && error?.stream == nil, "\(name): \(String(describing: error))")
            }
        }
    }

    @Test("a header block is joined from CONTINUATION frames on its stream only, nothing in between, within its bounds")
    func continuation() throws {
        let start = Self.frame(0x1, flags: 0x1, stream: 1, [0x82])
        var whole = Self.opening()
        var first = start, middle = Self.frame(0x9, stream: 1, [0x84]), last = Self.frame(0x9, flags: 0x4, stream: 1, [0x86])
        whole.writeBuffer(&first)
        whole.writeBuffer(&middle)
        whole.writeBuffer(&last)
        #expect(try Self.readAll(whole, piece: 3) == [
            .frame(.settings([])), .frame(.headers(stream: 1, block: ByteBuffer(bytes: [0x82, 0x84, 0x86]), endStream: true, priority: nil)),
        ])
        #expect(Self.failure(start, Self.frame(0x0, stream: 1, [1]))?.code == .protocolError)
        #expect(Self.failure(start, Self.frame(0x9, flags: 0x4, stream: 3, [0x82]))?.code == .protocolError)
        #expect(Self.failure(start, Self.frame(0xfa, stream: 1, []))?.code == .protocolError)
        // Bounds: the joined block's size, and the count of CONTINUATION frames (empty ones too).
        let small = HTTP2FrameReader(maxHeaderBlock: 100, maxContinuations: 3)
        let big = Self.frame(0x9, stream: 1, [UInt8](repeating: 0x82, count: 100))
        #expect(Self.failure(start, big, reader: small)?.code == .enhanceYourCalm)
        let empty = Self.frame(0x9, stream: 1, [])
        #expect(Self.failure(start, empty, empty, empty, reader: small) == nil)
        #expect(Self.failure(start, empty, empty, empty, empty, reader: small)?.code == .enhanceYourCalm)
    }

    @Test("after a connection error nothing more is read; a larger frame size, once agreed, is accepted")
    func afterFailureAndFrameSize() throws {
        var reader = HTTP2FrameReader()
        var bytes = Self.opening()
        var bad = Self.frame(0x6, stream: 0, [0])
        bytes.writeBuffer(&bad)
        reader.receive(bytes)
        #expect(try reader.next() == .frame(.settings([])))
        #expect(throws: HTTP2WireError.self) { try reader.next() }
        reader.receive(Self.frame(0x6, stream: 0, [0, 0, 0, 0, 0, 0, 0, 0]))
        #expect(throws: HTTP2WireError.self) { try reader.next() }
        var larger = HTTP2FrameReader()
        larger.maxFrameSize = 20_000
        var big = Self.opening()
        var frame = Self.frame(0x0, stream: 1, [UInt8](repeating: 1, count: 20_000))
        big.writeBuffer(&frame)
        #expect(try Self.readAll(big, reader: larger).count == 2)
    }

    @Test("an encoder that throws leaves the buffer as it was; GOAWAY's debug data is bounded")
    func writerEdges() {
        struct Refused: Error {}
        var out = ByteBuffer(string: "kept")
        #expect(throws: Refused.self) {
            try HTTP2FrameWriter.headers(stream: 1, endStream: true, maxFrameSize: 16_384, to: &out) { (buffer: inout ByteBuffer) throws(Refused) in
                buffer.writeString("partial")
                throw Refused()
            }
        }
        #expect(out == ByteBuffer(string: "kept"))
        var goAway = ByteBuffer()
        HTTP2FrameWriter.goAway(lastStream: 1, code: .enhanceYourCalm, debug: String(repeating: "x", count: 1_000), to: &goAway)
        #expect(goAway.readableBytes == 9 + 8 + 256)
    }

    @Test("NIOHTTP2 agrees: a client's frames (a long block, a body, a ping) read as NIOHTTP2 wrote them, and the writer's answer (a block in CONTINUATION frames) is what NIOHTTP2's client reads")
    func nioHTTP2Agrees() throws {
        let client = EmbeddedChannel()
        defer { _ = try? client.finish() }
        let frames = FrameRecorder()
        // A header list past NIOHTTP2's default 16 KiB, so that the answer's block needs
        // CONTINUATION frames; it applies once the writer's SETTINGS ACK arrives.
        let settings = [HTTP2Setting(parameter: .maxConcurrentStreams, value: 100), HTTP2Setting(parameter: .maxHeaderListSize, value: 65_536)]
        try client.pipeline.syncOperations.addHandler(NIOHTTP2Handler(mode: .client, initialSettings: settings))
        try client.pipeline.syncOperations.addHandler(frames)
        try client.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 443)).wait()
        // NIOHTTP2 writes no CONTINUATION frames (its blocks must fit one frame); curl's and
        // nghttp's do, through the raw floor (BenchToolTests).
        let long = String(repeating: "v", count: 30_000)
        var headers: HPACKHeaders = [":method": "POST", ":scheme": "https", ":authority": "example", ":path": "/upload", "x-long": String(long.prefix(12_000))]
        headers.add(name: "x-second", value: "2")
        try client.writeOutbound(HTTP2Frame(streamID: 1, payload: .headers(.init(headers: headers))))
        try client.writeOutbound(HTTP2Frame(streamID: 1, payload: .data(.init(data: .byteBuffer(ByteBuffer(string: "body")), endStream: true))))
        try client.writeOutbound(HTTP2Frame(streamID: 0, payload: .ping(HTTP2PingData(withInteger: 42), ack: false)))
        var wire = ByteBuffer()
        while var bytes = try client.readOutbound(as: ByteBuffer.self) { wire.writeBuffer(&bytes) }
        var reads = try Self.readAll(wire, piece: 1_000)
        #expect(reads.first.map { if case .frame(.settings) = $0 { true } else { false } } == true)
        reads.removeFirst()
        guard reads.count == 3, case .frame(.headers(1, var block, false, nil)) = reads[0] else {
            Issue.record("\(reads)")
            return
        }
        var decoder = HPACKDecoder(allocator: .init(), maxDynamicTableSize: HPACKDecoder.maxDynamicTableSize, maxHeaderListSize: 65_536)
        #expect(try decoder.decodeHeaders(from: &block) == headers)
        #expect(reads[1] == .frame(.data(stream: 1, payload: ByteBuffer(string: "body"), endStream: true, flowControlled: 4)))
        #expect(reads[2] == .frame(.ping(opaque: 42, ack: false)))

        // The server's side, written by the writer, read by NIOHTTP2's client.
        var answer = ByteBuffer()
        var encoder = HPACKEncoder(allocator: .init())
        HTTP2FrameWriter.settings([HTTP2WireSetting(HTTP2WireSetting.maxConcurrentStreams, 100)], to: &answer)
        HTTP2FrameWriter.settingsAck(to: &answer)
        let answerHeaders: HPACKHeaders = [":status": "200", "x-long": long]
        try HTTP2FrameWriter.headers(stream: 1, endStream: false, maxFrameSize: 16_384, to: &answer) { block in
            try encoder.encode(headers: answerHeaders, to: &block)
        }
        HTTP2FrameWriter.data(stream: 1, payload: ByteBuffer(string: "done"), endStream: true, maxFrameSize: 16_384, to: &answer)
        HTTP2FrameWriter.ping(opaque: 42, ack: true, to: &answer)
        try client.writeInbound(answer)
        let seen = frames.payloads.compactMap { payload -> String? in
            switch payload {
            case .headers(let h): return "headers \(h.headers == answerHeaders) \(h.endStream)"
            case .data(let d): if case .byteBuffer(let b) = d.data { return "data \(String(buffer: b)) \(d.endStream)" } else { return nil }
            case .ping(let p, let ack): return "ping \(p.integer) \(ack)"
            default: return nil
            }
        }
        #expect(seen == ["headers true false", "data done true", "ping 42 true"])
    }
}

/// The frames NIOHTTP2's client hands up, in order.
private final class FrameRecorder: ChannelInboundHandler {
    typealias InboundIn = HTTP2Frame
    var payloads: [HTTP2Frame.FramePayload] = []

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        payloads.append(unwrapInboundIn(data).payload)
    }
}
