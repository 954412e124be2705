import NIOCore
import NIOPosix

/// One HTTP/1.1 connection to a backend and the handler at its end. Equal only to itself, so
/// the pool's state can hold connections as its entries.
final class UpstreamConnection: Hashable, @unchecked Sendable {
    static func == (lhs: UpstreamConnection, rhs: UpstreamConnection) -> Bool { lhs === rhs }
    func hash(into hasher: inout Hasher) { hasher.combine(ObjectIdentifier(self)) }

    let channel: any Channel
    let handler: UpstreamHTTPHandler
    /// Taken from the pool (a stale keep-alive connection may fail before answering).
    var reused = false
    /// Called (on the loop) if the backend closes the connection while it sits idle.
    var onIdleClose: (() -> Void)? {
        get { handler.onIdleClose }
        set { handler.onIdleClose = newValue }
    }

    init(channel: any Channel, handler: UpstreamHTTPHandler) {
        self.channel = channel
        self.handler = handler
    }

    static func connect(_ backend: Backend, timeout: TimeAmount, on eventLoop: any EventLoop) -> EventLoopFuture<UpstreamConnection> {
        let handler = UpstreamHTTPHandler()
        return backend.connectBytes(on: eventLoop, timeout: timeout, handler: handler)
            .map { UpstreamConnection(channel: $0, handler: handler) }
    }
}

/// The end of a backend connection's pipeline (the only handler after TLS): reads responses
/// with `UpstreamResponseParser` and hands their events to the exchange using the connection;
/// holds reads back while the client cannot take more. Requests are written to the channel as
/// bytes the exchange framed.
final class UpstreamHTTPHandler: ChannelDuplexHandler, @unchecked Sendable {
    typealias InboundIn = ByteBuffer
    /// Outbound only for `read`, which is held while the client cannot take more; writes pass.
    typealias OutboundIn = ByteBuffer

    /// What the exchange in progress wants to hear.
    protocol Delegate: AnyObject {
        /// `now` is the loop's clock, read once for all the events of one read.
        func upstreamRead(_ event: UpstreamResponseParser.Event, now: NIODeadline)
        /// The bytes of one read were handed over: time to flush what they became.
        func upstreamReadComplete()
        func upstreamClosed(_ error: (any Error)?)
        func upstreamWritable()
    }

    /// Held strongly and cleared by the exchange when it lets the connection go (every ending
    /// does), or here when the connection fails: no weak reference to make per request.
    var delegate: (any Delegate)?
    var onIdleClose: (() -> Void)?
    /// The client is not writable: stop reading the backend.
    var paused = false {
        didSet { if !paused && oldValue && readHeld { readHeld = false; context?.read() } }
    }
    private var readHeld = false
    private var context: ChannelHandlerContext?
    private var parser = UpstreamResponseParser()

    /// The buffer the last request head went out in, kept for the next request on this
    /// connection: by then the socket has taken its bytes, so its storage is reused instead of
    /// two allocations a request. One grown by a large head is not kept.
    private var headBuffer: ByteBuffer?

    /// An empty buffer to write the next request head in.
    func requestHeadBuffer() -> ByteBuffer {
        if var buffer = headBuffer.take() {
            // Copies on write (allocates) only if the last head's write still holds it.
            buffer.clear()
            return buffer
        }
        return (context?.channel.allocator ?? ByteBufferAllocator()).buffer(capacity: Self.headCapacity)
    }

    static let headCapacity = 512

    /// Writes a request head made in `requestHeadBuffer()`, and keeps its buffer for the next.
    func writeRequestHead(_ head: ByteBuffer) {
        if head.capacity <= 4 * Self.headCapacity { headBuffer = head }
        write(head)
    }

    /// Request bytes, written from this handler's place at the end of the pipeline (a write to
    /// the channel would enter at its tail and pass through this handler first).
    func write(_ bytes: ByteBuffer) {
        context?.write(NIOAny(bytes), promise: nil)
    }

    /// Sends what was written once the loop has handled this wake-up's events (`DeferredFlushes`).
    func flushWrites() {
        if let context { DeferredFlushes.flushSoon(context) }
    }

    /// A request went out: read its response next.
    func expectResponse(toHEAD: Bool) {
        parser.expectResponse(toHEAD: toHEAD)
    }

    /// The last response was read to its end and nothing else came: another request may use
    /// this connection.
    var isReusable: Bool { parser.isReusable }

    func handlerAdded(context: ChannelHandlerContext) { self.context = context }
    func handlerRemoved(context: ChannelHandlerContext) { self.context = nil }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var buffer = unwrapInboundIn(data)
        // Read once for the read's events (a small answer's head, body and end come together).
        var now: NIODeadline?
        while true {
            let event: UpstreamResponseParser.Event?
            do {
                event = try parser.next(&buffer)
            } catch {
                failed(context: context, error)
                return
            }
            guard let event else { break }
            if let delegate {
                let clock = now ?? context.eventLoop.now
                now = clock
                delegate.upstreamRead(event, now: clock)
            }
            if case .end = event, buffer.readableBytes > 0 {
                // Bytes after a complete response, before any other request could be answered:
                // the backend is out of step; never trust this connection again.
                context.close(promise: nil)
                return
            }
        }
        if parser.sawStrayBytes { context.close(promise: nil) }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        delegate?.upstreamReadComplete()
        context.fireChannelReadComplete()
    }

    func read(context: ChannelHandlerContext) {
        if paused { readHeld = true } else { context.read() }
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable { delegate?.upstreamWritable() }
        context.fireChannelWritabilityChanged()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        failed(context: context, error)
    }

    private func failed(context: ChannelHandlerContext, _ error: any Error) {
        let delegate = self.delegate
        self.delegate = nil
        delegate?.upstreamClosed(error)
        context.close(promise: nil)
    }

    func channelInactive(context: ChannelHandlerContext) {
        if let delegate {
            // A body that runs until the backend closes ends here; anything else was cut short.
            do {
                if let end = try parser.inputClosed() {
                    delegate.upstreamRead(end, now: context.eventLoop.now)
                    delegate.upstreamReadComplete()
                }
                if let still = self.delegate {
                    self.delegate = nil
                    still.upstreamClosed(nil)
                }
            } catch {
                self.delegate = nil
                delegate.upstreamClosed(error)
            }
        } else {
            onIdleClose?()
        }
        onIdleClose = nil
        context.fireChannelInactive()
    }
}
