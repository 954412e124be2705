import NIOCore
import NIOHPACK
import NIOHTTP1

/// One stream of a connection served by Sluice's own HTTP/2 layer (`HTTP2WireConnection`),
/// with no channel: the sink its `HTTP2StreamHandler` answers through, and the request side's
/// bookkeeping.
///
/// The answer: a final head waits for the next part, so an answer with no body is one HEADERS
/// frame that ends the stream; body bytes wait here until a flush and then go out as far as the
/// stream's and the connection's send windows allow, the rest when the client opens its
/// window. While bytes wait for the window the stream is not writable, which stops the
/// exchange reading its backend (as a NIOHTTP2 stream channel's writability does).
///
/// The request: DATA is checked against a declared `Content-Length` (RFC 9113 §8.1.1), and
/// while the handler does not read (the backend is full, or admission waits) the bytes are
/// held back from the stream's window, so the client stops sending.
///
/// After an extended CONNECT's 200 the stream carries a WebSocket (RFC 8441) for the relay
/// (`carry`, and the tunnel's part below): DATA in is the relay's bytes, its writes go out
/// as DATA, flow control is its backpressure.
final class HTTP2WireStream: HTTP2StreamSink {
    let id: UInt32
    /// Strong, not `unowned`: an unowned reference costs a checked retain and a release on
    /// every use, and a stream uses its connection a dozen times a request. The cycle is broken
    /// when the connection forgets the stream (its close, or the connection's); a stream an
    /// exchange still holds keeps the connection's object, not its channel, a little longer.
    private let connection: HTTP2WireConnection
    /// Serves the request; set right after the stream is made.
    private(set) var handler: HTTP2StreamHandler<HTTP2WireStream>!

    // The answer.
    private var pendingHead: HTTP2ResponseBlock.Head?
    /// Body bytes waiting to go out, in order: the first piece here (most answers are one, and
    /// it costs no allocation), any after it in `queuedMore`.
    private var queued: ByteBuffer?
    private var queuedMore: [ByteBuffer] = []
    private var queuedBytes = 0
    private var endQueued = false
    private var endPromise: EventLoopPromise<Void>?
    /// The stream's END_STREAM went out.
    private(set) var answerEnded = false
    /// The handler was told it cannot write: it is told when it can again.
    private var toldBlocked = false

    // The request.
    private var declaredLength: Int?
    private var receivedBytes = 0
    /// DATA bytes not yet given back to the stream's window.
    private var heldBytes = 0
    /// The stream is over for Sluice (closed, reset either way, or the connection ended).
    private(set) var closed = false
    /// The client ended its side (END_STREAM, or trailers).
    private var clientEnded = false
    /// Run once the stream is over.
    private var closeWatchers: [() -> Void] = []

    // The WebSocket carried after an extended CONNECT's 200 (RFC 8441).
    /// The relay the stream carries, once switched.
    private var relay: WebSocketRelay?
    /// Resets the stream if the client does not end its side after Sluice ended its own.
    private var lingerTimer: Scheduled<Void>?

    /// When the read that opened the stream began: the request's start in its access-log line.
    let openedAt: NIODeadline

    init(id: UInt32, connection: HTTP2WireConnection, openedAt: NIODeadline = .now()) {
        self.id = id
        self.connection = connection
        self.openedAt = openedAt
    }

    func attach(_ handler: HTTP2StreamHandler<HTTP2WireStream>) {
        self.handler = handler
    }

    // MARK: The request, from the connection

    func requestHead(_ head: consuming HTTP2RequestHead) {
        clientEnded = head.endStream
        declaredLength = head.framing.contentLength
        if head.endStream, let declared = declaredLength, declared != 0 {
            refuse("Content-Length \(declared) on a request with no body", head: head)
            return
        }
        handler.requestPart(.head(head))
    }

    func requestData(_ payload: ByteBuffer, endStream: Bool) {
        if let relay {
            tunnelData(payload, endStream: endStream, relay: relay)
            return
        }
        let count = payload.readableBytes
        receivedBytes += count
        if let declared = declaredLength, receivedBytes > declared {
            // The connection's window gets these bytes back; the stream's is gone with it.
            connection.held(count)
            refuse("DATA of \(receivedBytes) bytes against Content-Length \(declared)")
            return
        }
        if handler.readsRequest {
            connection.consumed(count, on: self, wereHeld: false)
        } else {
            heldBytes += count
            connection.held(count)
        }
        if count > 0 { handler.requestPart(.body(payload)) }
        if endStream { requestFinished() }
        giveBackHeld()
    }

    /// The request ended (END_STREAM, or trailers).
    func requestFinished() {
        guard !closed else { return }
        clientEnded = true
        if relay != nil {
            clientEndedTunnel()
            return
        }
        if let declared = declaredLength, receivedBytes != declared {
            refuse("DATA of \(receivedBytes) bytes against Content-Length \(declared)")
            return
        }
        handler.requestPart(.end)
    }

    /// The request is malformed: the handler logs it (with `head` if it never saw it) and the
    /// connection resets the stream.
    private func refuse(_ reason: String, head: HTTP2RequestHead? = nil) {
        handler.refusedMalformed(head)
        connection.refuse(self, reason)
    }

    /// A read of the client ended: what it brought goes on in one write.
    func readComplete() {
        if let relay {
            relay.channelReadComplete(from: .downstream)
        } else {
            handler.requestReadComplete()
        }
    }

    /// Held bytes go back to the stream's window once the handler reads again (`force`: the
    /// relay reads again).
    private func giveBackHeld(force: Bool = false) {
        guard heldBytes > 0, !closed, force || handler.readsRequest else { return }
        let bytes = heldBytes
        heldBytes = 0
        connection.consumed(bytes, on: self, wereHeld: true)
        connection.scheduleFlush()
    }

    /// The stream ended for Sluice: the handler learns, once.
    func close() {
        guard !closed else { return }
        closed = true
        endPromise?.fail(ChannelError.ioOnClosedChannel)
        endPromise = nil
        queued = nil
        queuedMore = []
        lingerTimer?.cancel()
        lingerTimer = nil
        handler.streamClosed()
        if let relay {
            self.relay = nil
            relay.channelInactive(.downstream)
        }
        let watchers = closeWatchers
        closeWatchers = []
        for watcher in watchers { watcher() }
    }

    // MARK: ResponseSink

    var eventLoop: any EventLoop { connection.eventLoop }
    var responseAllocator: ByteBufferAllocator { connection.allocator }

    var responseWritable: Bool {
        let writable = connection.channelWritable && queuedBytes <= connection.sendable(on: self)
        if !writable { toldBlocked = true }
        return writable
    }

    func writeResponse(_ part: HTTPServerResponsePart, promise: EventLoopPromise<Void>?) {
        guard !closed else {
            promise?.fail(ChannelError.ioOnClosedChannel)
            return
        }
        switch part {
        case .head(let head) where head.status.code < 200:
            // Interim (100 Continue): its own HEADERS frame.
            connection.sendResponseHead(.parts(head), on: self, endStream: false)
            promise?.succeed(())
        case .head(let head):
            pendingHead = .parts(head)
            promise?.succeed(())
        case .body(.byteBuffer(let buffer)):
            if queued == nil { queued = buffer } else { queuedMore.append(buffer) }
            queuedBytes += buffer.readableBytes
            promise?.succeed(())
        case .body:
            promise?.fail(ChannelError.operationUnsupported)
        case .end:
            // Trailers from a backend are dropped, as on HTTP/1 (the exchange writes none).
            endQueued = true
            endPromise = promise
        }
    }

    func flushResponse() {
        send()
        connection.scheduleFlush()
    }

    func writeBackendHead(_ head: UpstreamResponseParser.Head, setCookie: String?) -> Bool {
        // An interim answer goes out as a part, in its own HEADERS frame.
        guard head.status >= 200 else { return false }
        if !closed { pendingHead = .backend(head, setCookie: setCookie) }
        return true
    }

    /// Writes what the windows allow: the head, DATA, the end.
    func send() {
        guard !closed, !answerEnded else { return }
        if let head = pendingHead.take() {
            let ends = endQueued && queued == nil
            guard connection.sendResponseHead(head, on: self, endStream: ends) else { return }
            if ends {
                answerFinished()
                return
            }
        }
        while var first = queued {
            let room = connection.sendable(on: self)
            guard room > 0 || first.readableBytes == 0 else { break }
            let piece = min(first.readableBytes, room)
            let whole = piece == first.readableBytes
            let ends = whole && queuedMore.isEmpty && endQueued
            connection.sendData(first.readSlice(length: piece)!, on: self, endStream: ends)
            queuedBytes -= piece
            if !whole {
                queued = first
            } else if queuedMore.isEmpty {
                queued = nil
            } else {
                queued = queuedMore.removeFirst()
            }
            if ends {
                answerFinished()
                return
            }
        }
        if queued == nil && endQueued {
            connection.sendData(ByteBuffer(), on: self, endStream: true)
            answerFinished()
        }
    }

    /// The window opened (or the connection became writable): what waited goes out, and a
    /// handler told it could not write learns that it can.
    func windowOpened() {
        send()
        guard toldBlocked, !closed, connection.channelWritable, queuedBytes <= connection.sendable(on: self) else { return }
        toldBlocked = false
        if let relay {
            relay.writabilityChanged(.downstream)
        } else {
            handler.clientWritabilityChanged(true)
        }
    }

    /// The connection's channel cannot take more: the handler stops reading its backend until
    /// `windowOpened`.
    func connectionBlocked() {
        guard !closed else { return }
        toldBlocked = true
        // (A relay asks whether it may write before each read: it learns then.)
        if relay == nil { handler.clientWritabilityChanged(false) }
    }

    private func answerFinished() {
        answerEnded = true
        let promise = endPromise
        endPromise = nil
        // The stream may be closed now (when the request had ended): the connection forgets
        // it before the promise lets the handler end it.
        connection.answerEnded(self)
        promise?.succeed(())
    }

    // MARK: HTTP2StreamSink

    func endStream() {
        guard !closed else { return }
        connection.end(self)
    }

    func readRequest() {
        giveBackHeld()
    }

    func closeClient() {
        endStream()
    }

    func whenClosed(_ body: @escaping () -> Void) {
        if closed {
            body()
        } else {
            closeWatchers.append(body)
        }
    }

    static func inPipeline(_ context: ChannelHandlerContext) -> HTTP2WireStream? { nil }
    var pipelineContext: ChannelHandlerContext? { nil }
    var wireStream: HTTP2WireStream? { self }
}

// MARK: - A WebSocket on the stream (RFC 8441)

extension HTTP2WireStream {
    /// How long the client has to end its side after Sluice ended its own (as `HTTP2TunnelCodec`).
    static let tunnelLinger: TimeAmount = .seconds(2)

    /// The stream carries `relay`'s client side from now on; the 200 written before goes out.
    /// `early` is what the client sent before it (its window held back while the upgrade went
    /// on): the relay reads it first and the window is given back; a client that also ended
    /// its side meanwhile has the tunnel ended after it.
    func carry(_ relay: WebSocketRelay, early: [ByteBuffer] = []) {
        self.relay = relay
        relay.attach(self)
        flushResponse()
        for buffer in early { relay.channelRead(buffer, from: .downstream) }
        if !early.isEmpty { relay.channelReadComplete(from: .downstream) }
        guard !closed, self.relay != nil else { return }
        giveBackHeld(force: true)
        if clientEnded { clientEndedTunnel() }
    }

    private func tunnelData(_ payload: ByteBuffer, endStream: Bool, relay: WebSocketRelay) {
        let count = payload.readableBytes
        // A relay whose backend cannot take more leaves the client's window unreplenished.
        if relay.readsFrom(.downstream) {
            connection.consumed(count, on: self, wereHeld: false)
        } else {
            heldBytes += count
            connection.held(count)
        }
        if count > 0 { relay.channelRead(payload, from: .downstream) }
        if endStream {
            clientEnded = true
            clientEndedTunnel()
        }
    }

    /// The client's END_STREAM is its FIN: Sluice ends its side too, which closes the stream
    /// (the relay sees it go).
    private func clientEndedTunnel() {
        relay?.channelReadComplete(from: .downstream)
        tunnelEnd()
    }

    var tunnelWritable: Bool { responseWritable }

    func tunnelWrite(_ buffer: ByteBuffer) {
        guard !closed, !endQueued else { return }
        if queued == nil { queued = buffer } else { queuedMore.append(buffer) }
        queuedBytes += buffer.readableBytes
    }

    func tunnelFlush() {
        flushResponse()
    }

    /// The relay reads again: the bytes held back go back to the client's window.
    func tunnelRead() {
        giveBackHeld(force: true)
    }

    /// Sluice's graceful end: END_STREAM after what is queued; the stream closes when the
    /// client ends its side, or is reset after `tunnelLinger`.
    func tunnelEnd() {
        guard !closed, !endQueued else { return }
        endQueued = true
        flushResponse()
        guard !clientEnded, !closed, lingerTimer == nil else { return }
        lingerTimer = eventLoop.assumeIsolated().scheduleTask(in: Self.tunnelLinger) { [self] in
            lingerTimer = nil
            endStream()
        }
    }

    /// The relay's abort: RST_STREAM now.
    func tunnelReset() {
        lingerTimer?.cancel()
        lingerTimer = nil
        endStream()
    }
}
