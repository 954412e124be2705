import NIOCore
import NIOHPACK
import NIOHTTP2
import Sluice
import SluiceConfig

/// `h2floor --mode raw` and `--mode raw-proxy`: HTTP/2 read and written as bytes on the
/// connection's own pipeline, with no NIOHTTP2 (Sluice's `HTTP2FrameReader`,
/// `HTTP2ConnectionState`, `HTTP2FieldCheck`, `HTTP2RateGuard` and `HTTP2FrameWriter`, NIOHPACK
/// for the header blocks), to know what an HTTP/2 layer of Sluice's own on NIO channels and
/// NIOSSL would cost — the alternative to NIOHTTP2 that issue 21's target asks about. Every
/// frame is checked as the reader checks it, streams and both flow-control windows are kept as
/// the state keeps them (consumed request bodies are announced back), every request's and
/// trailer section's fields are checked as RFC 9113 §8 requires, resets and control frames are
/// bounded as Sluice's defaults bound them; SETTINGS and PING are acknowledged, GOAWAY closes;
/// a request ends with END_STREAM, and every answer's header block is HPACK-encoded as a real
/// server's is. Not a server: no admission, and an answer the send window cannot take whole
/// resets its stream instead of waiting (h2load's windows are 1 GiB). A connection error
/// closes the connection after a GOAWAY.
final class FloorRawConnection: ChannelInboundHandler, FloorAnswering {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    /// The backend pool, for `raw-proxy`; without it the floor answers by itself.
    private let pool: FloorBackendPool?
    private var context: ChannelHandlerContext?
    /// Sluice's `listeners[].http2` defaults, but header lists up to 64 KiB in up to 64
    /// CONTINUATION frames (so that the floors test can send a block past one frame).
    private static let limits = {
        var limits = HTTP2Limits()
        limits.maxHeaderListSize = 65_536
        limits.maxContinuationFrames = 64
        return limits
    }()
    private var reader = HTTP2FrameReader(FloorRawConnection.limits)
    private var state = HTTP2ConnectionState(settings: .init(FloorRawConnection.limits))
    private var decoder = HPACKDecoder(
        allocator: .init(), maxDynamicTableSize: HPACKDecoder.maxDynamicTableSize, maxHeaderListSize: FloorRawConnection.limits.maxHeaderListSize
    )
    private var encoder = HPACKEncoder(allocator: .init())
    private var resets = HTTP2RateGuard.resets(FloorRawConnection.limits)
    private var controlFrames = HTTP2RateGuard.controlFrames(FloorRawConnection.limits)
    private var streamErrors = HTTP2RateGuard.streamErrors()
    private var outbound = ByteBuffer()
    private var flushPending = false

    init(pool: FloorBackendPool?) {
        self.pool = pool
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        outbound = context.channel.allocator.buffer(capacity: 4096)
        HTTP2FrameWriter.settings(state.settings.wire, to: &outbound)
        if let raise = state.openingWindowUpdate() { HTTP2FrameWriter.windowUpdate(stream: 0, increment: raise, to: &outbound) }
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
        reader.receive(unwrapInboundIn(data))
        do {
            while let read = try reader.next() {
                switch read {
                case .frame(let frame):
                    switch frame {
                    case .ping(_, false), .settings, .priority:
                        if let error = controlFrames.count(at: .now(), "PING, SETTINGS and PRIORITY frames") { throw error }
                    case .resetStream:
                        // Every reset counts, even of a stream already answered (as NIOHTTP2
                        // counts them): a client that opens and resets in a loop pays either way.
                        if let error = resets.count(at: .now(), "stream resets") { throw error }
                    default:
                        break
                    }
                    try received(try state.received(frame))
                case .streamError(let error): try refuse(error)
                }
            }
            if let update = state.connectionUpdate() { HTTP2FrameWriter.windowUpdate(stream: 0, increment: update.increment, to: &outbound) }
        } catch {
            HTTP2FrameWriter.goAway(lastStream: state.goAway(), code: (error as? HTTP2WireError)?.code ?? .compressionError, to: &outbound)
            flush()
            context.close(promise: nil)
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        if outbound.readableBytes > 0 { flush() }
        context.fireChannelReadComplete()
    }

    private func received(_ inbound: HTTP2ConnectionState.Inbound) throws {
        switch inbound {
        case .request(let stream, var block, let endStream):
            let headers = try decoder.decodeHeaders(from: &block)
            if let malformed = HTTP2FieldCheck.request(headers, stream: stream) {
                try refuse(malformed)
                return
            }
            if endStream { requestEnded(stream: stream) }
        case .trailers(let stream, var block):
            if let malformed = HTTP2FieldCheck.trailers(try decoder.decodeHeaders(from: &block), stream: stream) {
                try refuse(malformed)
                return
            }
            requestEnded(stream: stream)
        case .discardedBlock(var block, let refusal):
            _ = try decoder.decodeHeaders(from: &block)
            if let refusal { try refuse(refusal) }
        case .data(let stream, let payload, let endStream):
            for update in state.consumed(payload.readableBytes, on: stream) {
                HTTP2FrameWriter.windowUpdate(stream: update.stream, increment: update.increment, to: &outbound)
            }
            if endStream { requestEnded(stream: stream) }
        case .streamError(let error):
            try refuse(error)
        case .settings:
            try encoder.setDynamicTableSize(min(state.peerHeaderTableSize, HPACKEncoder.defaultDynamicTableSize))
            HTTP2FrameWriter.settingsAck(to: &outbound)
        case .settingsAcknowledged:
            reader.maxFrameSize = state.settings.maxFrameSize
        case .ping(let opaque):
            HTTP2FrameWriter.ping(opaque: opaque, ack: true, to: &outbound)
        case .goAway:
            context?.close(promise: nil)
        case .reset, .windowOpened, .none:
            break
        }
    }

    /// RST_STREAM for a client's stream error; the stream is closed. Too many of them end the
    /// connection.
    private func refuse(_ error: HTTP2WireError) throws {
        guard let stream = error.stream else { return }
        resetStream(stream, error.code)
        if let tooMany = streamErrors.count(at: .now(), "stream errors") { throw tooMany }
    }

    private func resetStream(_ stream: UInt32, _ code: HTTP2WireError.Code) {
        state.reset(stream)
        HTTP2FrameWriter.resetStream(stream: stream, code: code, to: &outbound)
    }

    private func requestEnded(stream: UInt32) {
        if let pool {
            pool.send(FloorExchange(client: self, streamID: HTTP2StreamID(Int32(stream))))
        } else {
            answer(streamID: HTTP2StreamID(Int32(stream)), status: "200", body: FloorAnswer.body)
        }
    }

    func answer(streamID: HTTP2StreamID, status: String, body: ByteBuffer?) {
        let stream = UInt32(Int32(streamID))
        guard context != nil, state.canSend(on: stream) else { return }
        let length = body?.readableBytes ?? 0
        guard length <= state.sendable(on: stream) else {
            resetStream(stream, .internalError)
            scheduleFlush()
            return
        }
        do {
            try HTTP2FrameWriter.headers(stream: stream, endStream: length == 0, maxFrameSize: state.peerMaxFrameSize, to: &outbound) { block in
                try encoder.encode(headers: [":status": status, "content-length": String(length)], to: &block)
            }
        } catch {
            context?.close(promise: nil)
            return
        }
        state.sentHeaders(on: stream, endStream: length == 0)
        if let body, length > 0 {
            HTTP2FrameWriter.data(stream: stream, payload: body, endStream: true, maxFrameSize: state.peerMaxFrameSize, to: &outbound)
            state.sentData(on: stream, bytes: length, endStream: true)
        }
        scheduleFlush()
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
