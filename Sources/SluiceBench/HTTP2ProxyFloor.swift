import NIOCore
import NIOHPACK
import NIOHTTP2
import NIOPosix

/// `h2floor --mode proxy`: the cheapest HTTP/2-to-HTTP/1.1 proxying NIO allows, to know what
/// any design of Sluice's HTTP/2 on NIO channels would cost at best. Streams are served on the
/// connection's frames (no child channels); each request that ends is sent as a fixed
/// `GET` to one keep-alive HTTP/1.1 backend over a connection of this pool, and the answer's
/// status and body go back as one HEADERS and one DATA frame. No routing, no admission, no
/// header forwarding, no request bodies, no flow control beyond NIOHTTP2's own: what is left is
/// the two channels' reads and writes, TLS, HTTP/2 framing and a response head found by its
/// `Content-Length` — which every proxy on NIO pays per request.
///
/// A request waits for its backend at most `timeout`: one sweep of the pool's connections,
/// twice per `timeout`, closes those whose answer is late (their stream gets a 502), so no
/// request's cost carries a timer of its own.
final class FloorBackendPool {
    private let eventLoop: any EventLoop
    private let backend: LoopbackTarget
    private let timeout: TimeAmount
    private var idle: [FloorBackendConnection] = []
    /// Every open connection, idle or waiting, for the sweep.
    private var connections: [FloorBackendConnection] = []

    /// Made on `eventLoop`, which it is used on alone.
    init(eventLoop: any EventLoop, backend: LoopbackTarget, timeout: TimeAmount) {
        self.eventLoop = eventLoop
        self.backend = backend
        self.timeout = timeout
        let sweeper = NIOLoopBound(self, eventLoop: eventLoop)
        let period = TimeAmount.nanoseconds(max(timeout.nanoseconds / 2, 1_000_000))
        eventLoop.scheduleRepeatedTask(initialDelay: period, delay: period) { _ in sweeper.value.closeLate() }
    }

    /// Closes the connections whose answer has waited past the timeout.
    private func closeLate() {
        let oldest = NIODeadline.now() - timeout
        for connection in connections { connection.closeIfWaiting(since: oldest) }
    }

    /// Sends `exchange`'s request on an idle connection, or a new one.
    func send(_ exchange: FloorExchange) {
        if let connection = idle.popLast() {
            connection.send(exchange)
            return
        }
        let bootstrap = ClientBootstrap(group: eventLoop)
            .channelOption(.tcpOption(.tcp_nodelay), value: 1)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(FloorBackendConnection()) }
            }
        bootstrap.connect(host: backend.host, port: backend.port).assumeIsolated().whenComplete { result in
            switch result {
            case .success(let channel):
                guard let connection = try? channel.pipeline.syncOperations.handler(type: FloorBackendConnection.self) else {
                    exchange.answer(status: "502", body: nil)
                    channel.close(promise: nil)
                    return
                }
                connection.pool = self
                self.connections.append(connection)
                connection.send(exchange)
            case .failure:
                exchange.answer(status: "502", body: nil)
            }
        }
    }

    /// A connection whose answer ended comes back for the next request.
    func release(_ connection: FloorBackendConnection) {
        idle.append(connection)
    }

    /// A connection that closed leaves the pool.
    func forget(_ connection: FloorBackendConnection) {
        idle.removeAll { $0 === connection }
        connections.removeAll { $0 === connection }
    }
}

/// A client connection of the proxying floors, which the backend's answer goes back to.
protocol FloorAnswering: AnyObject {
    func answer(streamID: HTTP2StreamID, status: String, body: ByteBuffer?)
}

/// One request waiting for its answer: the client connection and its stream.
struct FloorExchange {
    let client: any FloorAnswering
    let streamID: HTTP2StreamID

    func answer(status: String, body: ByteBuffer?) {
        client.answer(streamID: streamID, status: status, body: body)
    }
}

/// One keep-alive HTTP/1.1 connection to the backend, one request at a time; the answer's end
/// is found by its `Content-Length` (the floor's backend always sends one). Anything else —
/// bytes with no request waiting, a head past 64 KiB or with no length, a body past 16 MiB —
/// closes the connection, and a waiting stream gets a 502.
final class FloorBackendConnection: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private static let request = ByteBuffer(string: "GET / HTTP/1.1\r\nHost: backend\r\nUser-Agent: h2floor\r\n\r\n")
    private static let headEnd = Array("\r\n\r\n".utf8)
    private static let contentLength = Array("content-length:".utf8)
    private static let maxBody = 16 << 20

    weak var pool: FloorBackendPool?
    private var context: ChannelHandlerContext?
    private var waiting: FloorExchange?
    /// When the waiting request was sent.
    private var sentAt: NIODeadline?
    private var received = ByteBuffer()

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
    }

    func send(_ exchange: FloorExchange) {
        guard let context else {
            exchange.answer(status: "502", body: nil)
            return
        }
        waiting = exchange
        sentAt = .now()
        context.writeAndFlush(wrapOutboundOut(Self.request), promise: nil)
    }

    /// Closes the connection if its request was sent before `oldest` and is still unanswered.
    func closeIfWaiting(since oldest: NIODeadline) {
        if let sentAt, sentAt < oldest { context?.close(promise: nil) }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var bytes = unwrapInboundIn(data)
        guard waiting != nil else {
            context.close(promise: nil)
            return
        }
        if received.readableBytes == 0 {
            received = bytes
        } else {
            received.writeBuffer(&bytes)
        }
        let view = received.readableBytesView
        guard let end = FloorBytes.find(Self.headEnd, in: view) else {
            if view.count > FloorBytes.maxHead { context.close(promise: nil) }
            return
        }
        let head = view[view.startIndex..<end]
        guard head.count > 12, let length = Self.length(in: head), length <= Self.maxBody else {
            context.close(promise: nil)
            return
        }
        let bodyStart = end + Self.headEnd.count
        guard received.writerIndex - bodyStart >= length else { return }
        let status = String(decoding: view[(view.startIndex + 9)..<(view.startIndex + 12)], as: UTF8.self)
        let body = received.getSlice(at: bodyStart, length: length)
        received.moveReaderIndex(to: bodyStart + length)
        if received.readableBytes == 0 { received = ByteBuffer() }
        let exchange = waiting
        waiting = nil
        sentAt = nil
        pool?.release(self)
        exchange?.answer(status: status, body: body)
    }

    func channelInactive(context: ChannelHandlerContext) {
        self.context = nil
        pool?.forget(self)
        waiting?.answer(status: "502", body: nil)
        waiting = nil
        sentAt = nil
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }

    private static func length(in head: ByteBufferView) -> Int? {
        guard let name = FloorBytes.find(contentLength, in: head, ignoringCase: true) else { return nil }
        var value = 0
        var index = name + contentLength.count
        while index < head.endIndex, head[index] == UInt8(ascii: " ") { index += 1 }
        var digits = 0
        while index < head.endIndex, head[index] >= UInt8(ascii: "0"), head[index] <= UInt8(ascii: "9"), digits < 12 {
            value = value * 10 + Int(head[index] - UInt8(ascii: "0"))
            index += 1
            digits += 1
        }
        return digits == 0 ? nil : value
    }
}

/// The client connection's side: a request's END_STREAM sends it to the backend; answers are
/// written on the connection's frames and flushed once per event-loop wake-up.
final class FloorFrameProxy: ChannelInboundHandler, FloorAnswering {
    typealias InboundIn = HTTP2Frame
    typealias OutboundOut = HTTP2Frame

    private let pool: FloorBackendPool
    private var context: ChannelHandlerContext?
    private var flushPending = false

    init(pool: FloorBackendPool) {
        self.pool = pool
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
    }

    func channelInactive(context: ChannelHandlerContext) {
        self.context = nil
        context.fireChannelInactive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let frame = unwrapInboundIn(data)
        if frame.payload.endsStream { pool.send(FloorExchange(client: self, streamID: frame.streamID)) }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        // A stream the client reset before its answer: the answer is dropped by NIOHTTP2.
        if error is NIOHTTP2Errors.NoSuchStream || error is NIOHTTP2Errors.StreamClosed { return }
        context.close(promise: nil)
    }

    func answer(streamID: HTTP2StreamID, status: String, body: ByteBuffer?) {
        guard let context else { return }
        let length = body?.readableBytes ?? 0
        let headers: HPACKHeaders = [":status": status, "content-length": String(length)]
        context.write(wrapOutboundOut(HTTP2Frame(streamID: streamID, payload: .headers(.init(headers: headers, endStream: length == 0)))), promise: nil)
        if let body, length > 0 {
            context.write(wrapOutboundOut(HTTP2Frame(streamID: streamID, payload: .data(.init(data: .byteBuffer(body), endStream: true)))), promise: nil)
        }
        guard !flushPending else { return }
        flushPending = true
        // Tasks run after the loop has handled every ready event of this wake-up: the answers
        // of one wake-up leave in one write, as Sluice's `HTTP2FlushCoalescer` does.
        context.eventLoop.assumeIsolated().execute { [self] in
            flushPending = false
            self.context?.flush()
        }
    }
}
