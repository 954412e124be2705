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
        /// Normalised path and query, token parameters removed, prefix stripped if asked.
        var target: String
        var client: ForwardedHeaders.Client
        var clientIP: IPAddress?
        var identity: Identity?
    }

    private let route: Route
    private let backends: BackendSet
    private let request: Request
    private let downstream: any HTTPProxyDownstream
    /// The client connection's context: response parts are written here.
    private let client: ChannelHandlerContext
    private let pool: UpstreamPool
    private let services: GatewayServices
    private let settings: HTTPProxySettings
    private let poolSettings: PoolSettings

    private var candidates: [Int] = []
    private var attempt = 0
    private var backendIndex: Int?
    private var connection: UpstreamConnection?
    private var pending: [HTTPClientRequestPart] = []
    private var pendingBytes = 0
    private var requestDone = false
    private var requestBodyBytes = 0
    private var responseHead: HTTPResponseHead?
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
    private var endWritten: EventLoopFuture<Void>?
    /// The backend finished answering before the request body ended: its connection is not reused.
    private var responseEndedEarly = false
    private let requestHasBody: Bool
    private let requestChunked: Bool

    init(
        route: Route, backends: BackendSet, request: Request, client: ChannelHandlerContext, downstream: any HTTPProxyDownstream,
        pool: UpstreamPool, services: GatewayServices
    ) {
        self.route = route
        self.backends = backends
        self.request = request
        self.client = client
        self.downstream = downstream
        self.pool = pool
        self.services = services
        settings = route.configuration.http
        poolSettings = PoolSettings(
            maxIdle: settings.poolMaxIdle, idleTimeout: settings.poolIdleTimeout.nanoseconds, connectTimeout: TimeAmount(settings.connectTimeout)
        )
        requestChunked = request.framing.chunked
        requestHasBody = request.framing.hasBody
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

    func start() {
        if let limit = settings.maxRequestBody, let length = request.framing.contentLength, length > limit {
            fail(.payloadTooLarge, "request body larger than \(limit) bytes", result: "too_large", keepAlive: false)
            return
        }
        if HeaderTokens.contains(request.head.headers, "expect", token: "100-continue") {
            // Sluice reads the body itself, so it answers the expectation itself.
            client.writeAndFlush(NIOAny(HTTPServerResponsePart.head(HTTPResponseHead(version: .http1_1, status: .continue))), promise: nil)
        }
        var sticky: String?
        if case .cookie(let name) = backends.balance.sticky { sticky = CookieHeader.value(named: name, in: request.head.headers) }
        candidates = backends.candidates(attempts: max(backends.backends.count, 2), client: request.clientIP, stickyCookie: sticky)
        connectNext(lastFailure: nil)
    }

    func requestBody(_ buffer: ByteBuffer) {
        guard !finished else { return }
        requestBodyBytes += buffer.readableBytes
        if let limit = settings.maxRequestBody, requestBodyBytes > limit {
            if responseHead == nil {
                fail(.payloadTooLarge, "request body larger than \(limit) bytes", result: "too_large", keepAlive: false)
            } else {
                abortBoth()
            }
            return
        }
        let part = HTTPClientRequestPart.body(.byteBuffer(buffer))
        if let connection {
            connection.channel.write(part, promise: nil)
            if !connection.channel.isWritable { pauseClient(true) }
        } else {
            pending.append(part)
            pendingBytes += buffer.readableBytes
            if pendingBytes > 64 * 1024 { pauseClient(true) }
        }
        armIdleTimer()
    }

    func requestReadComplete() {
        connection?.channel.flush()
    }

    func requestEnd() {
        guard !finished else { return }
        requestDone = true
        watchingBody = false
        if let connection {
            // Flushed with the rest of this read (`requestReadComplete`).
            connection.channel.write(HTTPClientRequestPart.end(nil), promise: nil)
            armResponseTimer()
        } else {
            pending.append(.end(nil))
        }
        if responseDone { complete() }
    }

    func clientWritabilityChanged(_ writable: Bool) {
        connection?.handler.paused = !writable
    }

    /// The client went away.
    func cancel() {
        guard !finished else { return }
        finished = true
        cancelTimers()
        releaseConnection(reusable: false)
    }

    private func pauseClient(_ pause: Bool) {
        guard pause != clientReadsPaused else { return }
        clientReadsPaused = pause
        downstream.pauseClientReads(pause)
    }

    // MARK: Backend side

    private func connectNext(lastFailure: BackendConnectFailure?) {
        guard !finished else { return }
        guard attempt < candidates.count else {
            let answer = BackendConnectFailure.answer(after: lastFailure)
            fail(answer.status, answer.message, result: answer.result, keepAlive: true)
            return
        }
        let index = candidates[attempt]
        attempt += 1
        let backend = backends.backend(index)
        if let pooled = pool.takeIdle(backend, settings: poolSettings, on: eventLoop) {
            attach(pooled, index: index)
            return
        }
        let startedAt = NIODeadline.now()
        UpstreamConnection.connect(backend, timeout: poolSettings.connectTimeout, on: eventLoop).hop(to: eventLoop).assumeIsolated().whenComplete { [self] result in
            switch result {
            case .success(let connection):
                backends.connectSucceeded(index)
                route.metrics?.connectTime.recordNanoseconds((NIODeadline.now() - startedAt).nanoseconds)
                guard !finished else {
                    pool.release(connection, backend: backend, settings: poolSettings, reusable: true)
                    return
                }
                attach(connection, index: index)
            case .failure(let error):
                backends.connectFailed(index)
                connectNext(lastFailure: BackendConnectFailure(error))
            }
        }
    }

    private func attach(_ connection: UpstreamConnection, index: Int) {
        self.connection = connection
        backendIndex = index
        backends.began(index)
        connection.handler.delegate = self
        connection.handler.paused = !client.channel.isWritable
        connection.channel.write(HTTPClientRequestPart.head(upstreamHead(for: backends.backend(index))), promise: nil)
        for part in pending { connection.channel.write(part, promise: nil) }
        pending = []
        pendingBytes = 0
        // A pooled connection is attached inside the client's read: the flush at the end of
        // that read sends the head and what follows in one write. A new connection attaches
        // later, on its own.
        if !connection.reused { connection.channel.flush() }
        sentAt = .now()
        pauseClient(!connection.channel.isWritable)
        if requestDone { armResponseTimer() }
        connection.channel.read()
    }

    /// The request as the backend sees it: end-to-end headers only, Sluice's identity and
    /// forwarding headers, and framing Sluice chose.
    private func upstreamHead(for backend: Backend) -> HTTPRequestHead {
        var headers = ForwardedHeaders.endToEnd(request.head.headers, dropping: route.requestFieldsReplaced)
        for (name, value) in request.identity?.headers ?? [] { headers.add(name: name, value: value) }
        let host = route.configuration.hostHeader == .backend ? backend.hostHeader : (request.head.headers.first(name: "host") ?? backend.hostHeader)
        headers.add(name: "Host", value: host)
        if requestChunked { headers.add(name: "Transfer-Encoding", value: "chunked") }
        ForwardedHeaders.addForwarding(to: &headers, client: request.client)
        headers.add(name: "Via", value: "1.1 sluice")
        return HTTPRequestHead(version: .http1_1, method: request.head.method, uri: backend.target(for: request.target), headers: headers)
    }

    func upstreamRead(_ part: HTTPClientResponsePart) {
        guard !finished else { return }
        switch part {
        case .head(let head):
            if head.status.code < 200 { return }  // interim answers; Sluice sent its own 100
            responseDeadline = nil
            responseHead = head
            route.metrics?.responseTime.recordNanoseconds((NIODeadline.now() - sentAt).nanoseconds)
            client.write(NIOAny(HTTPServerResponsePart.head(clientHead(for: head))), promise: nil)
            if request.head.method == .HEAD || head.status.code == 204 || head.status.code == 304 { client.flush() }
            armIdleTimer()
        case .body(let buffer):
            responseBytes += buffer.readableBytes
            // Each chunk goes out as it came: server-sent events and streamed responses are
            // never held back.
            client.writeAndFlush(NIOAny(HTTPServerResponsePart.body(.byteBuffer(buffer))), promise: nil)
            if !client.channel.isWritable { connection?.handler.paused = true }
            armIdleTimer()
        case .end:
            responseDone = true
            responseEndedEarly = !requestDone
            endWritten = client.writeAndFlush(NIOAny(HTTPServerResponsePart.end(nil)))
            complete()
        }
    }

    /// The response head as the client sees it.
    private func clientHead(for head: HTTPResponseHead) -> HTTPResponseHead {
        var headers = ForwardedHeaders.endToEnd(head.headers)
        headers.add(name: "Via", value: "1.1 sluice")
        if let index = backendIndex, case .cookie(let name) = backends.balance.sticky,
            CookieHeader.value(named: name, in: request.head.headers) != backends.stickyIDs[index]
        {
            headers.add(name: "Set-Cookie", value: "\(name)=\(backends.stickyIDs[index]); Path=/; HttpOnly; SameSite=Lax")
        }
        if !clientKeepAlive(head) { headers.replaceOrAdd(name: "Connection", value: "close") }
        return HTTPResponseHead(version: .http1_1, status: head.status, headers: headers)
    }

    private func clientKeepAlive(_ response: HTTPResponseHead?) -> Bool {
        request.head.isKeepAlive && !(response.map { HeaderTokens.contains($0.headers, "connection", token: "close") } ?? false)
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
        if reused && retriable && attempt <= candidates.count + 1 {
            // A kept-alive connection the backend had closed: send the request again.
            attempt = max(0, attempt - 1)
            connectNext(lastFailure: nil)
            return
        }
        let reason = error.map { BackendConnectFailure.describe($0) } ?? "closed the connection"
        fail(.badGateway, "backend failed before answering (\(reason))", result: "backend_error", keepAlive: false)
    }

    func upstreamWritable() {
        if clientReadsPaused { pauseClient(false) }
    }

    // MARK: Endings

    private func complete() {
        guard !finished, responseDone else { return }
        guard requestDone else {
            // The backend answered before the request body ended (an early 413, say): the
            // client connection cannot carry another request; let the rest of the body drain.
            return
        }
        finished = true
        cancelTimers()
        let reusableUpstream = !responseEndedEarly && (responseHead.map { $0.isKeepAlive } ?? false)
        releaseConnection(reusable: reusableUpstream)
        downstream.exchangeFinished(
            status: responseHead?.status ?? .badGateway, bytes: responseBytes, reusable: clientKeepAlive(responseHead),
            written: endWritten ?? eventLoop.makeSucceededVoidFuture()
        )
    }

    private func fail(_ status: HTTPResponseStatus, _ message: String, result: String, keepAlive: Bool) {
        guard !finished else { return }
        finished = true
        cancelTimers()
        releaseConnection(reusable: false)
        services.logger.info("proxy request failed", metadata: ["route": "\(route.name)", "status": "\(status.code)", "reason": "\(message)"])
        // The client's body may be unread: keep the connection only if there was none.
        downstream.exchangeFailed(status, message, result: result, keepAlive: keepAlive && requestDone && request.head.isKeepAlive)
    }

    private func abortBoth() {
        guard !finished else { return }
        finished = true
        cancelTimers()
        releaseConnection(reusable: false)
        downstream.exchangeAborted()
    }

    private func releaseConnection(reusable: Bool) {
        guard let connection else { return }
        self.connection = nil
        connection.handler.delegate = nil
        connection.handler.paused = false
        if let index = backendIndex {
            backends.ended(index)
            backendIndex = nil
            pool.release(connection, backend: backends.backend(index), settings: poolSettings, reusable: reusable)
        } else {
            connection.channel.close(promise: nil)
        }
    }

    private func armResponseTimer() {
        let deadline = eventLoop.now + TimeAmount(settings.responseTimeout)
        responseDeadline = deadline
        downstream.watch(until: deadline)
    }

    /// Notes activity in a body; the connection's watchdog compares it with the idle timeout
    /// when it fires, so nothing is scheduled per chunk.
    private func armIdleTimer() {
        lastBodyActivity = eventLoop.now
        guard !watchingBody else { return }
        watchingBody = true
        downstream.watch(until: lastBodyActivity + TimeAmount(settings.idleTimeout))
    }

    /// Fails what is overdue at `now`; otherwise the next deadline to check, if any.
    func checkDeadlines(now: NIODeadline) -> NIODeadline? {
        guard !finished else { return nil }
        var next: NIODeadline?
        if let deadline = responseDeadline, responseHead == nil {
            if deadline <= now {
                fail(.gatewayTimeout, "backend did not answer in time", result: "backend_timeout", keepAlive: false)
                return nil
            }
            next = deadline
        }
        if watchingBody {
            let due = lastBodyActivity + TimeAmount(settings.idleTimeout)
            if due <= now {
                if responseHead == nil {
                    fail(.gatewayTimeout, "request body stalled", result: "timeout", keepAlive: false)
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

/// What an exchange needs from the client connection; the HTTP handler implements it (one
/// object per connection, not closures per request).
protocol HTTPProxyDownstream: AnyObject {
    /// Stop or resume reading the client (request body backpressure).
    func pauseClientReads(_ paused: Bool)
    /// A short error response before any response head was written.
    func exchangeFailed(_ status: HTTPResponseStatus, _ message: String, result: String, keepAlive: Bool)
    /// The exchange ended: the status sent, body bytes sent, whether the client connection may
    /// carry another request, and the write of the response's end.
    func exchangeFinished(status: HTTPResponseStatus, bytes: Int, reusable: Bool, written: EventLoopFuture<Void>)
    /// The client connection must close (a response was cut short).
    func exchangeAborted()
    /// The exchange has a deadline; `checkDeadlines` must run by then.
    func watch(until deadline: NIODeadline)
}
