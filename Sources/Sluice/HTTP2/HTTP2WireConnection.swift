import NIOCore
import NIOHPACK
import NIOHTTP1
import SluiceConfig

/// One client connection speaking HTTP/2 on Sluice's own layer (`listeners[].http2.engine:
/// wire`), in place of NIOHTTP2's handler, stream channels and `HTTP2RequestCodec`: the bytes
/// go through an `HTTP2WireSession`, and each stream is an `HTTP2WireStream` with no channel,
/// served by the same `HTTP2StreamHandler` (admission, backends, answers) as a NIOHTTP2 stream.
///
/// What NIOHTTP2's connection manager did is here too: a connection with no open stream for
/// `idle_timeout` (a half-sent header block included) gets a graceful GOAWAY and is closed; a
/// drain or a reload that changed the listener (`HTTP2Connection.ListenerChanged`) gets a
/// graceful GOAWAY, the open streams finish, then the connection closes. A connection error is
/// a GOAWAY with its code (counted in `sluice_http2_connection_errors_total`) and a close.
/// Frames leave once per event-loop wake-up. Extended CONNECT is offered (RFC 8441): a stream
/// whose backend accepted the WebSocket carries the relay's client side itself, and stays open
/// through a GOAWAY until the WebSocket closes or a drain closes it.
final class HTTP2WireConnection: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private let shared: HTTP2Connection
    private let idleTimeout: TimeAmount
    private var session: HTTP2WireSession
    private var streams = HTTP2StreamTable<HTTP2WireStream>()
    private var context: ChannelHandlerContext?
    let eventLoop: any EventLoop
    let allocator: ByteBufferAllocator
    private(set) var channelWritable = true
    private var flushPending = false
    /// Streams given DATA in this read: their backends get it in one write at the read's end.
    private var touched: [HTTP2WireStream] = []
    /// Sluice sent a graceful GOAWAY (or the client did): the connection closes once no stream is open.
    private var goingAway = false
    private var closing = false
    /// Since when no stream has been open; nil while one is.
    private var idleSince: NIODeadline?
    private var idleTimer = DeadlineTimer()

    init(shared: HTTP2Connection, limits: HTTP2Limits, channel: any Channel) {
        self.shared = shared
        idleTimeout = TimeAmount(limits.idleTimeout)
        eventLoop = channel.eventLoop
        allocator = channel.allocator
        session = HTTP2WireSession(limits: limits, extendedConnect: true, allocator: channel.allocator)
    }

    /// Installs the layer on a client channel whose protocol is settled (ALPN chose `h2`, or
    /// the client sent the h2c preface).
    static func install(
        on channel: any Channel, configuration: HTTPGatewayHandler.Configuration, limits: HTTP2Limits, routing: ListenerRouting, services: GatewayServices
    ) throws {
        let shared = HTTP2Connection(configuration: configuration, services: services, routing: routing, peer: configuration.peer, eventLoop: channel.eventLoop)
        try channel.pipeline.syncOperations.addHandler(HTTP2WireConnection(shared: shared, limits: limits, channel: channel))
    }

    // MARK: The channel

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        channelWritable = context.channel.isWritable
        becameIdle()
        if context.channel.isActive { scheduleFlush() }
    }

    func channelActive(context: ChannelHandlerContext) {
        scheduleFlush()
        context.fireChannelActive()
    }

    func channelInactive(context: ChannelHandlerContext) {
        closing = true
        idleTimer.cancel()
        shared.watchdog.close()
        let open = streams.allValues
        streams.removeAll()
        for stream in open { stream.close() }
        self.context = nil
        context.fireChannelInactive()
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        idleTimer.cancel()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        channelWritable = context.channel.isWritable
        for stream in streams.allValues {
            if channelWritable {
                stream.windowOpened()
            } else {
                stream.connectionBlocked()
            }
        }
        context.fireChannelWritabilityChanged()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is ChannelShouldQuiesceEvent || event is HTTP2Connection.ListenerChanged {
            goAwayGracefully()
        } else {
            context.fireUserInboundEventTriggered(event)
        }
    }

    // MARK: From the client

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !closing else { return }
        session.receive(unwrapInboundIn(data))
        let now = NIODeadline.now()
        do {
            while let event = try session.next(now: now) {
                handle(event, now: now)
                guard !closing else { return }
            }
        } catch {
            fail(error)
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        // (Nothing a backend write does reads the client: `touched` does not change meanwhile.)
        for stream in touched where !stream.closed { stream.readComplete() }
        touched.removeAll(keepingCapacity: true)
        if session.outbound.readableBytes > 0 { flush() }
        context.fireChannelReadComplete()
    }

    private func handle(_ event: consuming HTTP2WireSession.Event, now: NIODeadline) {
        // Consumed: a request's field list is taken over by its head, not copied.
        switch consume event {
        case .request(let id, let fields, let endStream):
            // (A stream opened after Sluice's GOAWAY never comes here: the session refuses it.)
            let stream = HTTP2WireStream(id: id, connection: self, openedAt: now)
            stream.attach(HTTP2StreamHandler(connection: shared, sink: stream))
            streams[id] = stream
            idleSince = nil
            stream.requestHead(HTTP2RequestCodec.requestHead(fields, endStream: endStream))
            // A pooled backend connection attached now sends the head with the read's end.
            touch(stream)
            settle(stream)
        case .data(let id, let payload, let endStream):
            guard let stream = streams[id] else {
                // A stream Sluice ended while the client still sent: its window is given back.
                session.consumed(payload.readableBytes, on: id)
                return
            }
            stream.requestData(payload, endStream: endStream)
            touch(stream)
            settle(stream)
        case .trailers(let id):
            guard let stream = streams[id] else { return }
            stream.requestFinished()
            touch(stream)
            settle(stream)
        case .reset(let id):
            guard let stream = streams[id] else { return }
            streams[id] = nil
            stream.close()
            afterStreamEnded()
        case .windowOpened(let id):
            if id == 0 {
                for stream in streams.allValues { stream.windowOpened() }
            } else {
                streams[id]?.windowOpened()
            }
            scheduleFlush()
        case .clientWentAway:
            goingAway = true
            afterStreamEnded()
        }
    }

    /// Notes a stream given something in this read (once in a row: a body's DATA frames come
    /// together).
    private func touch(_ stream: HTTP2WireStream) {
        guard !stream.closed, touched.last !== stream else { return }
        touched.append(stream)
    }

    /// A connection error: GOAWAY with its code, then the close.
    private func fail(_ error: HTTP2WireError) {
        guard !closing, let context else { return }
        closing = true
        shared.services.metrics.http2ConnectionError(listener: shared.configuration.listener, code: error.code.rawValue)
        session.fail(error)
        closeAfterWriting(context)
    }

    // MARK: For the streams

    func sendable(on stream: HTTP2WireStream) -> Int { session.sendable(on: stream.id) }

    @discardableResult
    func sendResponseHead(_ head: HTTP2ResponseBlock.Head, on stream: HTTP2WireStream, endStream: Bool) -> Bool {
        session.sendResponseHead(on: stream.id, endStream: endStream) { HTTP2ResponseBlock.write(head, to: &$0) }
    }

    func sendData(_ payload: ByteBuffer, on stream: HTTP2WireStream, endStream: Bool) {
        session.sendData(payload, on: stream.id, endStream: endStream)
    }

    func consumed(_ bytes: Int, on stream: HTTP2WireStream, wereHeld: Bool) {
        session.consumed(bytes, on: stream.id, wereHeld: wereHeld)
    }

    func held(_ bytes: Int) {
        session.held(bytes)
    }

    /// The stream's answer ended: closed if its request has too.
    func answerEnded(_ stream: HTTP2WireStream) {
        settle(stream)
    }

    /// A malformed request body (RFC 9113 §8.1.1): the stream is reset with PROTOCOL_ERROR.
    func refuse(_ stream: HTTP2WireStream, _ reason: String) {
        session.resetStream(stream.id, .protocolError)
        shared.services.logger.debug("HTTP/2 stream refused", metadata: ["stream": "\(stream.id)", "reason": "\(reason)"])
        remove(stream)
        scheduleFlush()
    }

    /// The handler ends its stream: reset if it is still open (NO_ERROR once the answer is out
    /// — the client need not send the rest of its body — else CANCEL).
    func end(_ stream: HTTP2WireStream) {
        if session.isOpen(stream.id) {
            session.resetStream(stream.id, stream.answerEnded ? .noError : .cancel)
            scheduleFlush()
        }
        remove(stream)
    }

    /// Forgets a stream the layer has closed.
    private func settle(_ stream: HTTP2WireStream) {
        guard !stream.closed, !session.isOpen(stream.id) else { return }
        remove(stream)
    }

    private func remove(_ stream: HTTP2WireStream) {
        guard streams[stream.id] === stream else {
            stream.close()
            return
        }
        streams[stream.id] = nil
        stream.close()
        afterStreamEnded()
    }

    private func afterStreamEnded() {
        guard streams.isEmpty else { return }
        if goingAway {
            closeWhenWritten()
        } else {
            becameIdle()
        }
    }

    // MARK: Idle, drain, reload

    private func becameIdle() {
        let now = NIODeadline.now()
        idleSince = now
        guard idleTimer.deadline == nil else { return }
        armIdleTimer(at: now + idleTimeout)
    }

    private func armIdleTimer(at deadline: NIODeadline) {
        idleTimer.arm(deadline, on: eventLoop) { [self] in
            idleTimer.fired()
            guard !closing, let since = idleSince else { return }
            let due = since + idleTimeout
            if due <= .now() {
                goAwayGracefully()
            } else {
                armIdleTimer(at: due)
            }
        }
    }

    /// GOAWAY with NO_ERROR: the streams the client opened so far finish; then the close.
    private func goAwayGracefully() {
        guard !closing else { return }
        if !goingAway {
            goingAway = true
            session.goAway(.noError)
            scheduleFlush()
        }
        if streams.isEmpty { closeWhenWritten() }
    }

    private func closeWhenWritten() {
        guard !closing, let context else { return }
        closing = true
        closeAfterWriting(context)
    }

    /// How long a closing connection waits for its last frames (a GOAWAY last) to leave: a
    /// client that no longer reads does not hold it open.
    static let closeGrace = TimeAmount.seconds(5)

    /// Writes what is pending and closes once it is out, or after `closeGrace`.
    private func closeAfterWriting(_ context: ChannelHandlerContext) {
        idleTimer.cancel()
        let written = context.eventLoop.makePromise(of: Void.self)
        context.writeAndFlush(wrapOutboundOut(takeOutbound()), promise: written)
        let overdue = context.eventLoop.assumeIsolated().scheduleTask(in: Self.closeGrace) { context.close(promise: nil) }
        written.futureResult.assumeIsolated().whenComplete { _ in
            overdue.cancel()
            context.close(promise: nil)
        }
    }

    // MARK: Writing

    /// Frames leave once per event-loop wake-up: at the end of a read, or after the wake-up's
    /// backend answers.
    func scheduleFlush() {
        guard !flushPending, context != nil else { return }
        flushPending = true
        eventLoop.assumeIsolated().execute { [self] in
            flushPending = false
            if session.outbound.readableBytes > 0 { flush() }
        }
    }

    private func flush() {
        guard let context, session.outbound.readableBytes > 0 else { return }
        context.writeAndFlush(wrapOutboundOut(session.outbound), promise: nil)
        // TLS has copied the bytes by now (and a socket written them, when it could): the
        // buffer is the session's alone again and is reused. One still held (a handshake not
        // done, a socket not writable) is left to its holder and a new one made; one grown
        // past the first size by a large answer is not kept on a connection that may idle.
        if session.outbound.capacity > Self.outboundCapacity {
            session.outbound = allocator.buffer(capacity: Self.outboundCapacity)
        } else {
            session.outbound.clear()
        }
    }

    /// What the frames to send are written into, kept for the connection's life.
    static let outboundCapacity = 4096

    private func takeOutbound() -> ByteBuffer {
        let bytes = session.outbound
        session.outbound = allocator.buffer(capacity: Self.outboundCapacity)
        return bytes
    }
}
