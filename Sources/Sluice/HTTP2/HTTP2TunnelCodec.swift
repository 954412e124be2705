import NIOCore
import NIOHTTP2

/// An HTTP/2 stream carrying a WebSocket (RFC 8441) after its 200: DATA frames in are the
/// relay's bytes, the relay's writes go out as DATA frames, and flow control is the relay's
/// backpressure (the stream is not writable while the client's window is spent; a held
/// `read()` leaves the client's window unreplenished).
///
/// Ends as a TCP connection does for the relay: the client's END_STREAM is its FIN (Sluice
/// ends its own side, which closes the stream cleanly), and the relay's close ends Sluice's
/// side with END_STREAM, then waits a moment for the client's before resetting the stream.
/// `reset()` is the relay's abort: RST_STREAM at once.
final class HTTP2TunnelCodec: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTP2Frame.FramePayload
    typealias InboundOut = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = HTTP2Frame.FramePayload

    /// How long the client has to end its side after Sluice ended its own.
    static let linger: TimeAmount = .seconds(2)

    private var ended = false
    private var clientEnded: Bool
    private var lingerTimer: Scheduled<Void>?

    /// - Parameter clientEnded: the client already ended its side (it cannot send frames).
    init(clientEnded: Bool = false) {
        self.clientEnded = clientEnded
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        lingerTimer?.cancel()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .data(let data):
            if case .byteBuffer(let buffer) = data.data, buffer.readableBytes > 0 {
                context.fireChannelRead(wrapInboundOut(buffer))
            }
            if data.endStream { clientEndedStream(context) }
        case .headers(let headers) where headers.endStream:
            clientEndedStream(context)
        default:
            break
        }
    }

    /// The client's FIN: end Sluice's side too, which closes the stream (the relay sees it go).
    private func clientEndedStream(_ context: ChannelHandlerContext) {
        clientEnded = true
        context.fireChannelReadComplete()
        endStream(context)
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        guard !ended else {
            promise?.fail(ChannelError.outputClosed)
            return
        }
        context.write(wrapOutboundOut(.data(.init(data: .byteBuffer(unwrapOutboundIn(data))))), promise: promise)
    }

    func close(context: ChannelHandlerContext, mode: CloseMode, promise: EventLoopPromise<Void>?) {
        guard context.channel.isActive, !ended else {
            context.close(mode: mode, promise: promise)
            return
        }
        if let promise { context.channel.closeFuture.cascade(to: promise) }
        endStream(context)
    }

    /// Ends Sluice's side with END_STREAM; the stream closes once the client's side is ended
    /// too, or is reset after `linger`.
    private func endStream(_ context: ChannelHandlerContext) {
        guard !ended else { return }
        ended = true
        context.writeAndFlush(wrapOutboundOut(.data(.init(data: .byteBuffer(ByteBuffer()), endStream: true))), promise: nil)
        guard !clientEnded else { return }
        let channel = context.channel
        lingerTimer = context.eventLoop.scheduleTask(in: Self.linger) { channel.close(promise: nil) }
    }

    /// Resets the stream now (the relay's abort).
    func reset(_ context: ChannelHandlerContext) {
        ended = true
        lingerTimer?.cancel()
        context.close(promise: nil)
    }
}
