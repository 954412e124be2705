import NIOCore
import NIOHPACK
import NIOHTTP2
import Sluice
import SluiceConfig

/// `h2floor --mode raw` and `--mode raw-proxy`: HTTP/2 read and written as bytes on the
/// connection's own pipeline, with no NIOHTTP2, on the same `HTTP2WireSession` that serves a
/// listener with `http2.engine: wire` (Sluice's frame reader and writer, connection state,
/// field checks and defences, its HPACK decoder; NIOHPACK encodes the answers), to know what Sluice's own HTTP/2
/// layer costs with nothing of the gateway above it. Every frame is checked, streams and both
/// flow-control windows are kept (consumed request bodies are announced back), every request's
/// and trailer section's fields are checked as RFC 9113 §8 requires, resets and control frames
/// are bounded as Sluice's defaults bound them; SETTINGS and PING are acknowledged, GOAWAY
/// closes; a request ends with END_STREAM, and every answer's header block is HPACK-encoded as
/// a real server's is. Not a server: no admission, and an answer the send window cannot take
/// whole resets its stream instead of waiting (h2load's windows are 1 GiB). A connection error
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
    private var session = HTTP2WireSession(limits: FloorRawConnection.limits, extendedConnect: true, allocator: ByteBufferAllocator())
    private var flushPending = false

    init(pool: FloorBackendPool?) {
        self.pool = pool
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
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
        session.receive(unwrapInboundIn(data))
        do {
            while let event = try session.next(now: .now()) {
                switch event {
                case .request(let stream, _, let endStream):
                    if endStream { requestEnded(stream: stream) }
                case .data(let stream, let payload, let endStream):
                    session.consumed(payload.readableBytes, on: stream)
                    if endStream { requestEnded(stream: stream) }
                case .trailers(let stream):
                    requestEnded(stream: stream)
                case .clientWentAway:
                    context.close(promise: nil)
                    return
                case .reset, .windowOpened:
                    break
                }
            }
        } catch {
            session.fail(error)
            flush()
            context.close(promise: nil)
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        if session.outbound.readableBytes > 0 { flush() }
        context.fireChannelReadComplete()
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
        guard context != nil, session.canSend(on: stream) else { return }
        let length = body?.readableBytes ?? 0
        guard length <= session.sendable(on: stream) else {
            session.resetStream(stream, .internalError)
            scheduleFlush()
            return
        }
        guard session.sendHeaders([":status": status, "content-length": String(length)], on: stream, endStream: length == 0) else {
            scheduleFlush()
            return
        }
        if let body, length > 0 { session.sendData(body, on: stream, endStream: true) }
        scheduleFlush()
    }

    /// Answers leave once per event-loop wake-up: at the end of a read, or after the wake-up's
    /// backend answers.
    private func scheduleFlush() {
        guard !flushPending, let context else { return }
        flushPending = true
        context.eventLoop.assumeIsolated().execute { [self] in
            flushPending = false
            if session.outbound.readableBytes > 0 { flush() }
        }
    }

    private func flush() {
        guard let context else { return }
        context.writeAndFlush(wrapOutboundOut(session.outbound), promise: nil)
        session.outbound = context.channel.allocator.buffer(capacity: 4096)
    }
}
