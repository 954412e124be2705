import NIOCore
import SluiceConfig

/// Reads the PROXY protocol header at the start of a connection from a trusted balancer, then
/// hands the connection on: `accepted` installs the rest of the pipeline (TLS, HTTP) after this
/// handler with the client address the header carried, the bytes that followed the header go
/// to it, and this handler leaves. A header that is missing, malformed, of another version,
/// oversized or slower than `timeout` closes the connection and is reported to `refused`.
final class ProxyProtocolHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer

    private let version: ProxyProtocolVersion
    private let timeout: TimeAmount
    private let accepted: (ProxyHeader) throws -> Void
    /// Why (a metric label: `invalid`, `timeout`, `truncated`) and the reason for the log.
    private let refused: (_ label: String, _ reason: String) -> Void
    private var buffered: ByteBuffer?
    private var timer = DeadlineTimer()
    private var done = false

    init(version: ProxyProtocolVersion, timeout: TimeAmount, accepted: @escaping (ProxyHeader) throws -> Void, refused: @escaping (_ label: String, _ reason: String) -> Void) {
        self.version = version
        self.timeout = timeout
        self.accepted = accepted
        self.refused = refused
    }

    func handlerAdded(context: ChannelHandlerContext) {
        timer.arm(context.eventLoop.now + timeout, on: context.eventLoop) { [self] in
            timer.fired()
            refuse(context, "timeout", "no complete PROXY header within \(timeout.nanoseconds / 1_000_000) ms")
        }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        timer.cancel()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !done else { return }
        var bytes = unwrapInboundIn(data)
        if var earlier = buffered {
            earlier.writeBuffer(&bytes)
            bytes = earlier
        }
        switch ProxyHeader.parse(bytes.readableBytesView, accepting: version) {
        case .needMore:
            buffered = bytes
        case .invalid(let reason):
            refuse(context, "invalid", reason)
        case .header(let header, let length):
            done = true
            buffered = nil
            timer.cancel()
            bytes.moveReaderIndex(forwardBy: length)
            do {
                try accepted(header)
            } catch {
                context.close(promise: nil)
                return
            }
            guard context.channel.isActive else { return }
            if bytes.readableBytes > 0 { context.fireChannelRead(wrapInboundOut(bytes)) }
            context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        if !done, buffered != nil { refused("truncated", "the connection ended inside the PROXY header") }
        done = true
        context.fireChannelInactive()
    }

    private func refuse(_ context: ChannelHandlerContext, _ label: String, _ reason: String) {
        guard !done else { return }
        done = true
        buffered = nil
        refused(label, reason)
        context.close(promise: nil)
    }
}
