import NIOCore

/// The thin channel handler at the end of each relayed channel; it hands every event to the
/// `WebSocketRelay` the two channels share and withholds `read()` for backpressure.
final class RelayHandler: ChannelDuplexHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private let relay: WebSocketRelay
    private let side: RelaySide

    init(relay: WebSocketRelay, side: RelaySide) {
        self.relay = relay
        self.side = side
    }

    func handlerAdded(context: ChannelHandlerContext) {
        relay.attach(context, side: side)
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
