import NIOCore
import NIOHTTP1

/// Sends the upgrade request to a backend and reports its answer, part by part.
///
/// It sits at the end of the backend channel's HTTP pipeline only until the answer is known:
/// on a 101 the `WebSocketUpgrade` replaces the HTTP handlers with the relay; any other answer
/// is streamed to the client as it comes.
final class UpstreamHandshakeHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPClientResponsePart
    typealias OutboundOut = HTTPClientRequestPart

    /// What the backend sent.
    enum Event {
        case head(HTTPResponseHead)
        case body(ByteBuffer)
        case end
        case failed(any Error)
    }

    private let request: HTTPRequestHead
    private var onEvent: ((Event) -> Void)?

    init(request: HTTPRequestHead, onEvent: @escaping (Event) -> Void) {
        self.request = request
        self.onEvent = onEvent
    }

    func channelActive(context: ChannelHandlerContext) {
        context.write(wrapOutboundOut(.head(request)), promise: nil)
        context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
        context.fireChannelActive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head): onEvent?(.head(head))
        case .body(let body): onEvent?(.body(body))
        case .end: onEvent?(.end)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        report(.failed(ChannelError.eof))
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        report(.failed(error))
        context.close(promise: nil)
    }

    /// Stops reporting (the upgrade is finished with this channel).
    func detach() { onEvent = nil }

    private func report(_ event: Event) {
        let callback = onEvent
        onEvent = nil
        callback?(event)
    }
}
