import NIOCore
import NIOSSL
import NIOTLS

/// Closes a connection whose TLS handshake has not finished in time, reports handshakes that
/// fail or time out, then steps aside.
///
/// A client that opens a socket and sends nothing would otherwise hold it forever.
final class TLSHandshakeTimeoutHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = NIOAny

    private let timeout: TimeAmount
    private let onFailure: () -> Void
    private var timer = DeadlineTimer()
    private var failed = false

    init(timeout: TimeAmount, onFailure: @escaping () -> Void = {}) {
        self.timeout = timeout
        self.onFailure = onFailure
    }

    private func reportFailure() {
        guard !failed else { return }
        failed = true
        onFailure()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        reportFailure()
        context.fireErrorCaught(error)
    }

    func channelInactive(context: ChannelHandlerContext) {
        // Still here, so the handshake never completed.
        reportFailure()
        context.fireChannelInactive()
    }

    func handlerAdded(context: ChannelHandlerContext) {
        if context.channel.isActive { arm(context) }
    }

    func channelActive(context: ChannelHandlerContext) {
        arm(context)
        context.fireChannelActive()
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        timer.cancel()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if case .handshakeCompleted? = event as? TLSUserEvent {
            timer.cancel()
            context.fireUserInboundEventTriggered(event)
            context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    private func arm(_ context: ChannelHandlerContext) {
        guard timer.deadline == nil else { return }
        timer.arm(context.eventLoop.now + timeout, on: context.eventLoop) { [self] in
            timer.fired()
            reportFailure()
            context.close(promise: nil)
        }
    }
}
