import NIOCore

/// The thin channel handler at the end of each relayed channel; it hands every event to the
/// `WebSocketRelay` the two channels share and withholds `read()` for backpressure.
final class RelayHandler: ChannelDuplexHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private let relay: WebSocketRelay
    private let side: RelaySide
    /// The channel is a socket whose write buffer the relay sizes (an HTTP/2 stream is not: its
    /// buffer is the connection's setting, and it refuses socket options).
    private let isSocket: Bool

    init(relay: WebSocketRelay, side: RelaySide, isSocket: Bool = true) {
        self.relay = relay
        self.side = side
        self.isSocket = isSocket
    }

    func handlerAdded(context: ChannelHandlerContext) {
        relay.attach(context, side: side, isSocket: isSocket)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        relay.channelRead(unwrapInboundIn(data), from: side)
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        relay.channelReadComplete(from: side)
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        relay.writabilityChanged(side)
        context.fireChannelWritabilityChanged()
    }

    func channelInactive(context: ChannelHandlerContext) {
        relay.channelInactive(side)
        context.fireChannelInactive()
    }

    func read(context: ChannelHandlerContext) {
        relay.read(from: side, context: context)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        // TLS and socket errors end the connection; channelInactive reports it to the relay.
        context.close(promise: nil)
    }
}
