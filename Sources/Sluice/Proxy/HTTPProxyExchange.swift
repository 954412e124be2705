import Logging
import NIOCore
import NIOHTTP1
import SluiceConfig

/// One plain HTTP request proxied to a backend and its response back, both bodies streamed as
/// they come with backpressure both ways: the client is not read while the backend cannot take
/// more, the backend is not read while the client cannot.
///
/// Runs on the client channel's event loop, with a pooled connection on the same loop. A
/// connect failure tries the next backend; a reused keep-alive connection that fails before
/// answering is retried only for an idempotent request without a body. Failures before the
/// response head become 502/504 (or 413 for an oversized body); after it, the client
/// connection is closed, since a response cannot be taken back.
final class HTTPProxyExchange: UpstreamHTTPHandler.Delegate {

    /// Everything about the request decided before the exchange starts.
    struct Request {
        var head: HTTPRequestHead
        /// Body framing and length, read once with the head.
        var framing: RequestFraming
        /// The client lets its connection stay open after this request.
        var keepAlive: Bool
        /// Normalised path and query, token parameters removed, prefix stripped if asked.
        var target: String
        var client: ForwardedHeaders.Client
        /// `client`'s forwarding fields and `Via`, rendered, when they do not depend on this
        /// request's own headers (no trusted incoming chain).
        var forwarding: ByteBuffer?
        var clientIP: IPAddress?
        var identity: Identity?
    }

    private let route: Route
    private let backends: BackendSet
    private let request: Request
    private let downstream: any HTTPProxyDownstream
    /// The client: interim answers go here (through the HTTP encoder, on HTTP/1).
    private let client: any ResponseSink
    /// Where the proxied response goes.
    private let response: ClientResponse
    private let pool: UpstreamPool
    private let services: GatewayServices
    /// The route's `max_request_body` (nil: no limit).
    private let maxRequestBody: Int?
    private let times: Route.ProxyTimes

    private var attempts: BackendAttempts
    /// The backend this exchange holds a connection to (counted in its in-flight requests).
    private var backendIndex: Int?
    private var connection: UpstreamConnection?
    /// Request bytes read before a backend connection was ready.
    private var pending: [ByteBuffer] = []
    private var pendingBytes = 0
    private var requestDone = false
    private var requestBodyBytes = 0
    private var responseHead: UpstreamResponseParser.Head?
    /// The client gets the body in chunks framed here (the backend's was chunked or ran until
    /// it closed).
    private var rechunkResponse = false
    /// The client connection may carry another request after this response.
    private var clientKeepsAlive = false
    private var responseDone = false
    private var responseBytes = 0
    private var finished = false
    /// When the backend must have answered (the request was sent); nil otherwise.
    private var responseDeadline: NIODeadline?
    /// A body is streaming (the request's, then the response's): it may not stall longer than
    /// the idle timeout.
    private var watchingBody = false
    private var lastBodyActivity = NIODeadline.uptimeNanoseconds(0)
    private var clientReadsPaused = false
    private var sentAt = NIODeadline.uptimeNanoseconds(0)
    /// The write of the response's end, kept only when the client connection closes after it.
    private var endWritten: EventLoopFuture<Void>?
    /// The backend finished answering before the request body ended: its connection is not reused.
    private var responseEndedEarly = false
    private let requestHasBody: Bool
    private let requestChunked: Bool

    init(
        route: Route, backends: BackendSet, request: consuming Request, client: any ResponseSink, response: ClientResponse,
        downstream: any HTTPProxyDownstream, pool: UpstreamPool, services: GatewayServices
    ) {
        self.route = route
        self.backends = backends
        self.client = client
        self.response = response
        self.downstream = downstream
        self.pool = pool
        self.services = services
        maxRequestBody = route.configuration.http.maxRequestBody
        times = route.proxyTimes
        requestChunked = request.framing.chunked
        requestHasBody = request.framing.hasBody
        attempts = BackendAttempts(
            backends, attempts: max(backends.backends.count, 2), client: request.clientIP, headers: request.head.headers, user: request.identity?.user
        )
        // Last, and moved: the request is not copied into the exchange.
        self.request = request
    }

    private var eventLoop: any EventLoop { client.eventLoop }

    /// A response head went to the client: an error now can only cut the connection.
    var responseStarted: Bool { responseHead != nil }

    /// Idempotent methods without a body may be sent again on another connection.
    private var retriable: Bool {
        guard !requestHasBody else { return false }
        switch request.head.method {
        case .GET, .HEAD, .OPTIONS, .PUT, .DELETE, .TRACE: return true
        default: return false
        }
    }

    // MARK: Client side

    /// `now`, here and below, is the loop's clock when the caller has read it for this event:
    /// a request reads it once to start and once per read of its answer, not at each step (the
    /// backend choice, `BackendAttempts`, reads its own).
    func start(now: NIODeadline? = nil) {
        if let limit = maxRequestBody, let length = request.framing.contentLength, length > limit {
            fail(.client(.payloadTooLarge, .tooLarge, "request body larger than \(limit) bytes"), keepAlive: false)
            return
        }
        if request.framing.expectsContinue {
            // Sluice reads the body itself, so it answers the expectation itself.
            client.writeResponse(.head(HTTPResponseHead(version: .http1_1, status: .continue)), promise: nil)
            client.flushResponse()
        }
        connectNext(now: now)
    }

    func requestBody(_ buffer: ByteBuffer) {
        guard !finished else { return }
        requestBodyBytes += buffer.readableBytes
        if let limit = maxRequestBody, requestBodyBytes > limit {
            if responseHead == nil {
                fail(.client(.payloadTooLarge, .tooLarge, "request body larger than \(limit) bytes"), keepAlive: false)
            } else {
                abortBoth()
            }
            return
        }
        guard buffer.readableBytes > 0 else { return }
        if requestChunked {
            // Re-framed here: the backend reads exactly the chunks Sluice writes.
            HTTPWireFormat.chunk(buffer, allocator: client.responseAllocator) { sendRequestBytes($0) }
        } else {
            sendRequestBytes(buffer)
        }
        armIdleTimer()
    }

    private func sendRequestBytes(_ bytes: ByteBuffer) {
        if let connection {
            connection.handler.write(bytes)
            if !connection.channel.isWritable { pauseClient(true) }
        } else {
            pending.append(bytes)
            pendingBytes += bytes.readableBytes
            if pendingBytes > 64 * 1024 { pauseClient(true) }
        }
    }

    func requestReadComplete() {
        connection?.handler.flushWrites()
    }

    func requestEnd(now: NIODeadline? = nil) {
        guard !finished else { return }
        requestDone = true
        watchingBody = false
        // Flushed with the rest of this read (`requestReadComplete`).
        if requestChunked { sendRequestBytes(HTTPWireFormat.lastChunk) }
        if connection != nil { armResponseTimer(now: now ?? eventLoop.now) }
        if responseDone { complete(now: now) }
    }

    func clientWritabilityChanged(_ writable: Bool) {
        connection?.handler.paused = !writable
    }

    /// The client went away. A request that went out whole leaves its response to be read
    /// and dropped (`UpstreamDrain`), so the backend connection can serve another; any other
    /// is closed.
    func cancel() {
        guard !finished else { return }
        finished = true
        cancelTimers()
        if requestDone, !responseDone, times.pool.maxIdle > 0, let index = backendIndex, let connection = connection.take() {
            backends.ended(index)
            backendIndex = nil
            UpstreamDrain.start(connection, head: responseHead, from: backends, index, settings: times.pool, pool: pool)
            return
        }
        releaseConnection(reusable: false)
    }

    private func pauseClient(_ pause: Bool) {
        guard pause != clientReadsPaused else { return }
        clientReadsPaused = pause
        downstream.pauseClientReads(pause)
    }

    // MARK: Backend side

    private func connectNext(now: NIODeadline? = nil) {
        guard !finished else { return }
        guard let (index, backend) = attempts.nextBackend() else {
            fail(attempts.exhausted, keepAlive: true)
            return
        }
        let startedAt = now ?? eventLoop.now
        if let pooled = pool.takeIdle(backend, settings: times.pool, on: eventLoop, now: startedAt) {
            attach(pooled, index: index, now: startedAt)
            return
        }
        UpstreamConnection.connect(backend, timeout: times.pool.connectTimeout, on: eventLoop).hop(to: eventLoop).assumeIsolated().whenComplete { [self] result in
            switch result {
            case .success(let connection):
                let connectedAt = eventLoop.now
                route.metrics?.connectTime.recordNanoseconds((connectedAt - startedAt).nanoseconds)
                guard !finished else {
                    pool.release(connection, backend: backend, settings: times.pool, reusable: true, now: connectedAt)
                    return
                }
                attach(connection, index: index, now: connectedAt)
            case .failure(let error):
                attempts.failed(error)
                connectNext()
            }
        }
    }

    private func attach(_ connection: UpstreamConnection, index: Int, now: NIODeadline) {
        self.connection = connection
        backendIndex = index
        backends.began(index)
        connection.handler.delegate = self
        connection.handler.paused = !client.responseWritable
        connection.handler.expectResponse(toHEAD: request.head.method == .HEAD)
        connection.handler.writeRequestHead(upstreamHead(for: backends.backend(index), in: connection.handler.requestHeadBuffer()))
        for part in pending { connection.handler.write(part) }
        pending = []
        pendingBytes = 0
        // A pooled connection is attached inside the client's read: the flush at the end of
        // that read sends the head and what follows in one write. A new connection attaches
        // later, on its own.
        if !connection.reused { connection.handler.flushWrites() }
        sentAt = now
        pauseClient(!connection.channel.isWritable)
        if requestDone { armResponseTimer(now: now) }
    }

    /// The request as the backend sees it: end-to-end headers only, Sluice's identity and
    /// forwarding headers, and framing Sluice chose.
    private func upstreamHead(for backend: Backend, in head: consuming ByteBuffer) -> ByteBuffer {
        head.writeRequestLine(request.head.method, backend.target(for: request.target))
        UpstreamHead.forEachField(route: route, headers: request.head.headers, client: request.client, identity: request.identity, backend: backend) {
            head.writeField($0, $1)
        }
        if requestChunked { head.writeStaticString("Transfer-Encoding: chunked\r\n") }
        if let forwarding = request.forwarding {
            head.writeImmutableBuffer(forwarding)
        } else {
            let chains = ForwardedHeaders.incomingChains(request.head.headers, client: request.client)
            HTTPWireFormat.writeForwarding(request.client, chains: chains, into: &head)
        }
        head.writeStaticString("\r\n")
        return head
    }

    func upstreamRead(_ event: UpstreamResponseParser.Event, now: NIODeadline) {
        guard !finished else { return }
        switch event {
        case .head(let head):
            attempts.answered(status: head.status, to: request.head.method.rawValue)
            if head.status >= 500 {
                if backends.balance.retryRequests, retriable, requestDone, [502, 503, 504].contains(head.status),
                    attempts.mayRetry(reason: String(head.status))
                {
                    // Nothing reached the client: the next backend answers instead.
                    releaseConnection(reusable: false, now: now)
                    responseDeadline = nil
                    connectNext(now: now)
                    // A pooled connection attached here is outside the client's read, whose
                    // end would have flushed it.
                    connection?.handler.flushWrites()
                    return
                }
            }
            responseDeadline = nil
            responseHead = head
            route.metrics?.responseTime.recordNanoseconds((now - sentAt).nanoseconds)
            switch response {
            case .http1(let clientBytes):
                clientBytes.write(NIOAny(clientHead(for: head)), promise: nil)
            case .parts(let stream):
                clientKeepsAlive = true
                // Sluice's own HTTP/2 layer encodes the head as read, with no field strings.
                if !stream.writeBackendHead(head, setCookie: stickyCookie) {
                    stream.writeResponse(.head(partsHead(for: head)), promise: nil)
                }
            }
            armIdleTimer(now: now)
        case .body(let buffer):
            responseBytes += buffer.readableBytes
            switch response {
            case .http1(let clientBytes) where rechunkResponse:
                HTTPWireFormat.chunk(buffer, allocator: client.responseAllocator) { clientBytes.write(NIOAny($0), promise: nil) }
            case .http1(let clientBytes):
                clientBytes.write(NIOAny(buffer), promise: nil)
            case .parts(let stream):
                stream.writeResponse(.body(.byteBuffer(buffer)), promise: nil)
            }
            // Flushed when this read of the backend is done (`upstreamReadComplete`): each
            // chunk goes out as it came, server-sent events are never held back.
            if !client.responseWritable { connection?.handler.paused = true }
            armIdleTimer(now: now)
        case .end:
            responseDone = true
            responseEndedEarly = !requestDone
            if case .parts(let stream) = response {
                // The flush that sends END_STREAM closes a stream whose request has ended, and
                // a closed stream cancels its exchange: finish (handing the backend connection
                // back to the pool) between the write and the flush.
                let written = downstream.waitsForResponseEnd ? eventLoop.makePromise(of: Void.self) : nil
                stream.writeResponse(.end(nil), promise: written)
                endWritten = written?.futureResult
                complete(now: now)
                stream.flushResponse()
                return
            } else if case .http1(let clientBytes) = response, clientKeepsAlive {
                // Nothing waits for this write: no promise, and no write at all for a sized body.
                // Sent with the loop's other flushes of this wake-up.
                if rechunkResponse { clientBytes.write(NIOAny(HTTPWireFormat.lastChunk), promise: nil) }
                DeferredFlushes.flushSoon(clientBytes)
            } else if case .http1(let clientBytes) = response {
                // The connection closes once the response is out.
                let written = eventLoop.makePromise(of: Void.self)
                clientBytes.writeAndFlush(NIOAny(rechunkResponse ? HTTPWireFormat.lastChunk : ByteBuffer()), promise: written)
                endWritten = written.futureResult
            }
            complete(now: now)
        }
    }

    func upstreamReadComplete() {
        switch response {
        case .http1(let clientBytes): clientBytes.flush()
        case .parts(let stream): stream.flushResponse()
        }
    }

    /// The response head for a client that takes parts (HTTP/2): the backend's status and
    /// end-to-end fields, `Via`, and the sticky cookie; the stream frames the body.
    private func partsHead(for head: UpstreamResponseParser.Head) -> HTTPResponseHead {
        // Via, and perhaps a stickiness cookie.
        var headers = HTTPWireFormat.endToEndFields(of: head, extra: 2)
        headers.add(name: "via", value: HTTPWireFormat.viaValue.description)
        if let cookie = stickyCookie { headers.add(name: "set-cookie", value: cookie) }
        return HTTPResponseHead(version: .http2, status: HTTPResponseStatus(statusCode: head.status), headers: headers)
    }

    /// The cookie that pins the client to the backend that answered, when the route pins so.
    private var stickyCookie: String? {
        guard let index = backendIndex else { return nil }
        return backends.stickyCookie(for: index, requestHeaders: request.head.headers)
    }

    /// The response head as the client sees it, and how its body will be framed.
    private func clientHead(for head: UpstreamResponseParser.Head) -> ByteBuffer {
        var additions = HTTPWireFormat.ResponseAdditions()
        additions.setCookie = stickyCookie
        let clientIsHTTP11 = request.head.version.major == 1 && request.head.version.minor >= 1
        var keepAlive = request.keepAlive && !head.closeRequested
        switch head.framing {
        case .chunked, .untilClose:
            // HTTP/1.1 clients get chunks; an HTTP/1.0 client reads until Sluice closes.
            if clientIsHTTP11 { rechunkResponse = true } else { keepAlive = false }
        case .none, .length:
            break
        }
        clientKeepsAlive = keepAlive
        additions.chunked = rechunkResponse
        additions.close = !keepAlive
        additions.keepAliveForHTTP10 = keepAlive && !clientIsHTTP11
        return HTTPWireFormat.responseHead(head, adding: additions, allocator: client.responseAllocator)
    }

    func upstreamClosed(_ error: (any Error)?) {
        guard !finished, !responseDone else { return }
        let reused = connection?.reused ?? false
        connection = nil
        if let index = backendIndex {
            backends.ended(index)
            backendIndex = nil
        }
        guard responseHead == nil else {
            // Part of the response went out: the client's copy is cut short; close it.
            abortBoth()
            return
        }
        if reused && retriable {
            // A kept-alive connection the backend had closed: send the request again (to the
            // same backend: its next idle connection, at last a new one).
            attempts.again()
            connectNext()
            return
        }
        let reason = error.map { BackendConnectFailure.describe($0) } ?? "closed the connection"
        fail(.backend(.badGateway, .backendError, "backend failed before answering (\(reason))"), keepAlive: false)
    }

    func upstreamWritable() {
        if clientReadsPaused { pauseClient(false) }
    }

    // MARK: Endings

    private func complete(now: NIODeadline? = nil) {
        guard !finished, responseDone else { return }
        guard requestDone else {
            // The backend answered before the request body ended (an early 413, say): the
            // client connection cannot carry another request; let the rest of the body drain.
            return
        }
        finished = true
        cancelTimers()
        let reusableUpstream = !responseEndedEarly && (responseHead?.keepAlive ?? false) && (connection?.handler.isReusable ?? false)
        releaseConnection(reusable: reusableUpstream, now: now)
        downstream.exchangeFinished(
            status: HTTPResponseStatus(statusCode: responseHead?.status ?? 502), bytes: responseBytes, reusable: clientKeepsAlive,
            written: endWritten
        )
    }

    private func fail(_ error: SluiceError, keepAlive: Bool) {
        guard !finished else { return }
        finished = true
        cancelTimers()
        releaseConnection(reusable: false)
        services.logger.info("proxy request failed", metadata: [
            "route": "\(route.name)", "status": "\(error.status.code)", "source": "\(error.source.rawValue)", "reason": "\(error.message)",
        ])
        // The client's body may be unread: keep the connection only if there was none.
        downstream.exchangeFailed(error, keepAlive: keepAlive && requestDone && request.keepAlive)
    }

    private func abortBoth() {
        guard !finished else { return }
        finished = true
        cancelTimers()
        releaseConnection(reusable: false)
        downstream.exchangeAborted()
    }

    private func releaseConnection(reusable: Bool, now: NIODeadline? = nil) {
        guard let connection = connection.take() else { return }
        connection.handler.delegate = nil
        connection.handler.paused = false
        if let index = backendIndex {
            backends.ended(index)
            backendIndex = nil
            pool.release(
                connection, backend: backends.backend(index), settings: times.pool, reusable: reusable,
                backendKeepAliveSeconds: responseHead?.keepAliveTimeout, now: now
            )
        } else {
            connection.channel.close(promise: nil)
        }
    }

    private func armResponseTimer(now: NIODeadline) {
        let deadline = now + times.response
        responseDeadline = deadline
        downstream.watch(until: deadline)
    }

    /// Notes activity in a body; the connection's watchdog compares it with the idle timeout
    /// when it fires, so nothing is scheduled per chunk.
    private func armIdleTimer(now: NIODeadline? = nil) {
        lastBodyActivity = now ?? eventLoop.now
        guard !watchingBody else { return }
        watchingBody = true
        downstream.watch(until: lastBodyActivity + times.idle)
    }

    /// Fails what is overdue at `now`; otherwise the next deadline to check, if any.
    func checkDeadlines(now: NIODeadline) -> NIODeadline? {
        guard !finished else { return nil }
        var next: NIODeadline?
        if let deadline = responseDeadline, responseHead == nil {
            if deadline <= now {
                fail(.backend(.gatewayTimeout, .backendTimeout, "backend did not answer in time"), keepAlive: false)
                return nil
            }
            next = deadline
        }
        if watchingBody {
            let due = lastBodyActivity + times.idle
            if due <= now {
                if responseHead == nil {
                    // The client stalled; the 504 says the backend never got the whole request.
                    fail(.client(.gatewayTimeout, .timeout, "request body stalled"), keepAlive: false)
                } else {
                    abortBoth()
                }
                return nil
            }
            next = min(next ?? due, due)
        }
        return next
    }

    private func cancelTimers() {
        responseDeadline = nil
        watchingBody = false
    }
}

/// Where a proxied response is written.
enum ClientResponse {
    /// HTTP/1: bytes framed by the exchange, written beneath the client's HTTP encoder (this
    /// context is the encoder's).
    case http1(ChannelHandlerContext)
    /// An HTTP/2 stream: response parts, which the stream turns into frames.
    case parts(any ResponseSink)
}

/// What an exchange needs from the client connection; the HTTP handler implements it (one
/// object per connection, not closures per request).
protocol HTTPProxyDownstream: AnyObject {
    /// Stop or resume reading the client (request body backpressure).
    func pauseClientReads(_ paused: Bool)
    /// A short error response before any response head was written.
    func exchangeFailed(_ error: SluiceError, keepAlive: Bool)
    /// The exchange ended: the status sent, body bytes sent, whether the client connection may
    /// carry another request, and (when it may not) the write of the response's end.
    func exchangeFinished(status: HTTPResponseStatus, bytes: Int, reusable: Bool, written: EventLoopFuture<Void>?)
    /// The client connection must close (a response was cut short).
    func exchangeAborted()
    /// The exchange has a deadline; `checkDeadlines` must run by then.
    func watch(until deadline: NIODeadline)
    /// Whether it acts once the end of an HTTP/2 response is written (`exchangeFinished`'s
    /// `written`): a stream whose client is still sending is reset then. Otherwise the exchange
    /// makes no promise for it.
    var waitsForResponseEnd: Bool { get }
}

extension HTTPProxyDownstream {
    var waitsForResponseEnd: Bool { false }
}
