import NIOCore

/// Holds an HTTP/2 connection's flushes until its event loop has handled the events of the
/// current wake-up (`DeferredFlushes`), then flushes once.
///
/// Every stream that finishes an answer flushes the connection: with many streams in flight,
/// the answers of one wake-up (each arriving from its own backend connection) would each go out
/// in a TLS record and a write of their own. Held here, beneath NIOHTTP2 and above TLS, they
/// leave together in one write. A close flushes what is held first, so nothing written before
/// it is lost.
final class HTTP2FlushCoalescer: ChannelOutboundHandler, RemovableChannelHandler, DeferredFlushing {
    typealias OutboundIn = ByteBuffer

    private var context: ChannelHandlerContext?
    /// A flush was asked for and is waiting for the batch.
    private var held = false

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        flushHeld(context)
        self.context = nil
    }

    func flush(context: ChannelHandlerContext) {
        guard !held else { return }
        held = true
        DeferredFlushes.flushSoon(self, on: context.eventLoop)
    }

    func close(context: ChannelHandlerContext, mode: CloseMode, promise: EventLoopPromise<Void>?) {
        flushHeld(context)
        context.close(mode: mode, promise: promise)
    }

    func flushDeferred() {
        if let context { flushHeld(context) }
    }

    private func flushHeld(_ context: ChannelHandlerContext) {
        guard held else { return }
        held = false
        context.flush()
    }
}
