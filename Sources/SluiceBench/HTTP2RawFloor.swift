import NIOCore
import NIOHPACK
import NIOHTTP2

/// `h2floor --mode raw` and `--mode raw-proxy`: HTTP/2 read and written as bytes on the
/// connection's own pipeline, with no NIOHTTP2 at all (NIOHPACK for the header blocks), to know
/// what an HTTP/2 server of Sluice's own on NIO channels and NIOSSL would cost — the alternative
/// to NIOHTTP2 that issue 21's target asks about. It speaks enough of RFC 9113 for h2load and
/// nghttp: the preface, SETTINGS and their ACK, HEADERS with CONTINUATION, DATA, PING,
/// WINDOW_UPDATE (counted: answers wait for no window, they are 64 bytes against h2load's
/// 1 GiB), RST_STREAM and GOAWAY; a request ends with END_STREAM. Every answer's header block is
/// HPACK-encoded as a real server would. Not a server: no stream states, limits or defences,
/// which a real one adds at a few counters a frame. Anything malformed closes the connection.
final class FloorRawConnection: ChannelInboundHandler, FloorAnswering {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private static let preface = Array("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".utf8)
    private static let maxFrame = 16_384

    /// The backend pool, for `raw-proxy`; without it the floor answers by itself.
    private let pool: FloorBackendPool?
    private var context: ChannelHandlerContext?
    private var received = ByteBuffer()
    private var prefaceSeen = false
    private var decoder = HPACKDecoder(allocator: .init(), maxDynamicTableSize: HPACKDecoder.maxDynamicTableSize, maxHeaderListSize: 65_536)
    private var encoder = HPACKEncoder(allocator: .init())
    /// A header block split over HEADERS and CONTINUATION frames: its stream, whether the
    /// request ended with it, and its bytes so far.
    private var block: (stream: UInt32, endStream: Bool, bytes: ByteBuffer)?
    private var outbound = ByteBuffer()
    private var flushPending = false
    /// The connection's send window as the client grants it (counted, not waited on).
    private var sendWindow = 65_535
    /// Bytes of request bodies received since the last connection WINDOW_UPDATE.
    private var unacknowledged = 0

    init(pool: FloorBackendPool?) {
        self.pool = pool
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        outbound = context.channel.allocator.buffer(capacity: 4096)
        // The server's SETTINGS (100 streams, as Sluice's default) opens the connection.
        writeFrameHeader(length: 6, type: 4, flags: 0, stream: 0)
        outbound.writeInteger(UInt16(3))
        outbound.writeInteger(UInt32(100))
    }

    func channelActive(context: ChannelHandlerContext) {
        scheduleFlush()
        context.fireChannelActive()
    }

    func channelInactive(context: ChannelHandlerContext) {
        self.context = nil
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var bytes = unwrapInboundIn(data)
        if received.readableBytes == 0 {
            received = bytes
        } else {
            received.writeBuffer(&bytes)
        }
        do {
            try readFrames()
        } catch {
            context.close(promise: nil)
            return
        }
        if received.readableBytes == 0 { received.clear() }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        if outbound.readableBytes > 0 { flush() }
        context.fireChannelReadComplete()
    }

    private struct Malformed: Error {}

    private func readFrames() throws {
        if !prefaceSeen {
            guard received.readableBytes >= Self.preface.count else { return }
            guard received.readBytes(length: Self.preface.count) == Self.preface else { throw Malformed() }
            prefaceSeen = true
        }
        while received.readableBytes >= 9 {
            let start = received.readerIndex
            let length = Int(received.getInteger(at: start, as: UInt16.self)!) << 8 | Int(received.getInteger(at: start + 2, as: UInt8.self)!)
            guard length <= Self.maxFrame else { throw Malformed() }
            guard received.readableBytes >= 9 + length else { return }
            let type = received.getInteger(at: start + 3, as: UInt8.self)!
            let flags = received.getInteger(at: start + 4, as: UInt8.self)!
            let stream = received.getInteger(at: start + 5, as: UInt32.self)! & 0x7fff_ffff
            received.moveReaderIndex(forwardBy: 9)
            var payload = received.readSlice(length: length)!
            try frame(type: type, flags: flags, stream: stream, payload: &payload)
        }
    }

    private func frame(type: UInt8, flags: UInt8, stream: UInt32, payload: inout ByteBuffer) throws {
        if block != nil && type != 9 { throw Malformed() }
        switch type {
        case 0:  // DATA
            unacknowledged += payload.readableBytes
            if unacknowledged >= 32_768 {
                writeWindowUpdate(stream: 0, increment: unacknowledged)
                unacknowledged = 0
            }
            if flags & 0x1 != 0 { requestEnded(stream: stream) }
        case 1:  // HEADERS
            if flags & 0x8 != 0 {  // PADDED
                guard let pad = payload.readInteger(as: UInt8.self), Int(pad) <= payload.readableBytes else { throw Malformed() }
                payload = payload.getSlice(at: payload.readerIndex, length: payload.readableBytes - Int(pad))!
            }
            if flags & 0x20 != 0 {  // PRIORITY
                guard payload.readableBytes >= 5 else { throw Malformed() }
                payload.moveReaderIndex(forwardBy: 5)
            }
            guard stream != 0 else { throw Malformed() }
            if flags & 0x4 != 0 {
                try headerBlock(stream: stream, endStream: flags & 0x1 != 0, bytes: &payload)
            } else {
                block = (stream, flags & 0x1 != 0, payload)
            }
        case 9:  // CONTINUATION
            guard var pending = block, pending.stream == stream else { throw Malformed() }
            pending.bytes.writeBuffer(&payload)
            guard pending.bytes.readableBytes <= 65_536 else { throw Malformed() }
            if flags & 0x4 != 0 {
                block = nil
                try headerBlock(stream: stream, endStream: pending.endStream, bytes: &pending.bytes)
            } else {
                block = pending
            }
        case 4:  // SETTINGS
            if flags & 0x1 == 0 {
                guard payload.readableBytes % 6 == 0 else { throw Malformed() }
                writeFrameHeader(length: 0, type: 4, flags: 0x1, stream: 0)
                scheduleFlush()
            }
        case 6:  // PING
            if flags & 0x1 == 0 {
                guard payload.readableBytes == 8 else { throw Malformed() }
                writeFrameHeader(length: 8, type: 6, flags: 0x1, stream: 0)
                outbound.writeBuffer(&payload)
                scheduleFlush()
            }
        case 8:  // WINDOW_UPDATE
            guard let increment = payload.readInteger(as: UInt32.self) else { throw Malformed() }
            if stream == 0 { sendWindow += Int(increment & 0x7fff_ffff) }
        case 7:  // GOAWAY
            context?.close(promise: nil)
        default:  // PRIORITY, RST_STREAM, unknown: nothing to do for the floor
            break
        }
    }

    private func headerBlock(stream: UInt32, endStream: Bool, bytes: inout ByteBuffer) throws {
        let headers = try decoder.decodeHeaders(from: &bytes)
        guard headers.first(name: ":method") != nil else { throw Malformed() }
        if endStream { requestEnded(stream: stream) }
    }

    private func requestEnded(stream: UInt32) {
        if let pool {
            pool.send(FloorExchange(client: self, streamID: HTTP2StreamID(Int32(stream))))
        } else {
            answer(streamID: HTTP2StreamID(Int32(stream)), status: "200", body: FloorAnswer.body)
        }
    }

    func answer(streamID: HTTP2StreamID, status: String, body: ByteBuffer?) {
        guard let context else { return }
        let stream = UInt32(Int32(streamID))
        let length = body?.readableBytes ?? 0
        // The header block goes after its frame header, whose length is set once it is known.
        let headerAt = outbound.writerIndex
        writeFrameHeader(length: 0, type: 1, flags: length == 0 ? 0x5 : 0x4, stream: stream)
        let blockStart = outbound.writerIndex
        do {
            try encoder.encode(headers: [":status": status, "content-length": String(length)], to: &outbound)
        } catch {
            context.close(promise: nil)
            return
        }
        let blockLength = outbound.writerIndex - blockStart
        outbound.setInteger(UInt16(blockLength >> 8), at: headerAt)
        outbound.setInteger(UInt8(blockLength & 0xff), at: headerAt + 2)
        if var body, length > 0 {
            writeFrameHeader(length: length, type: 0, flags: 0x1, stream: stream)
            outbound.writeBuffer(&body)
            sendWindow -= length
        }
        scheduleFlush()
    }

    private func writeFrameHeader(length: Int, type: UInt8, flags: UInt8, stream: UInt32) {
        outbound.writeInteger(UInt16(length >> 8))
        outbound.writeInteger(UInt8(length & 0xff))
        outbound.writeInteger(type)
        outbound.writeInteger(flags)
        outbound.writeInteger(stream)
    }

    private func writeWindowUpdate(stream: UInt32, increment: Int) {
        writeFrameHeader(length: 4, type: 8, flags: 0, stream: stream)
        outbound.writeInteger(UInt32(increment))
    }

    /// Answers leave once per event-loop wake-up: at the end of a read, or after the wake-up's
    /// backend answers.
    private func scheduleFlush() {
        guard !flushPending, let context else { return }
        flushPending = true
        context.eventLoop.assumeIsolated().execute { [self] in
            flushPending = false
            if outbound.readableBytes > 0 { flush() }
        }
    }

    private func flush() {
        guard let context else { return }
        context.writeAndFlush(wrapOutboundOut(outbound), promise: nil)
        outbound = context.channel.allocator.buffer(capacity: 4096)
    }
}
