import Logging
import NIOCore
import NIOHTTP1
import SluiceConfig

/// Serves one client connection's HTTP/1.1 requests: limits, routing, and the hand-off of
/// WebSocket upgrades to `WebSocketUpgrade`.
///
/// Requests are answered one at a time and in order, so keep-alive and pipelining are safe.
/// While an upgrade is in flight the handler withholds `read()`, so bytes the client sends
/// early stay in the decoder and reach the relay in order.
final class HTTPGatewayHandler: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundIn = HTTPServerResponsePart
    typealias OutboundOut = HTTPServerResponsePart

    /// Per-listener settings.
    struct Configuration {
        var listener: String
        var tls: Bool
        var limits: HTTPLimits
    }

    /// What the handler is doing with the current request.
    private enum State {
        /// Waiting for a request head.
        case idle
        /// Head seen; the answer is sent when the request ends.
        case pending(Answer)
        /// The route's authentication is deciding; reads are held.
        case authorizing
        /// A plain request is being proxied; its body streams through the exchange.
        case proxying(HTTPProxyExchange)
        /// A backend upgrade is in flight.
        case upgrading(WebSocketUpgrade)
        /// The relay took over, or the connection is closing.
        case done
    }

    /// The answer to give once the request body (if any) has been read.
    private enum Answer {
        case respond(HTTPResponseStatus, String, headers: [(String, String)], keepAlive: Bool, head: Bool)
        case demoPage(head: Bool, keepAlive: Bool)
        case upgrade(Route, HTTPRequestHead, UpgradeRequest, RequestPath, ClientIdentity)
        case proxy(Route, HTTPRequestHead, RequestPath, ClientIdentity)
    }

    /// Who is asking, once the forwarding headers have been weighed.
    struct ClientIdentity {
        /// The socket peer (the client, or the last proxy).
        var peer: IPAddress?
        /// The client, after `trusted_proxies`.
        var address: IPAddress?
        var peerIsTrustedProxy: Bool
    }

    /// The request being answered, for its access-log line.
    private struct RequestRecord {
        var method: String
        /// The path without its query string, which may carry credentials.
        var path: String
        var route: String?
        var client: IPAddress?
        var user: String?
        var userAgent: String?
        var startedAt: NIODeadline
        /// Why an upgrade was refused (a result label, or the limit's name).
        var rejection: String?
    }

    private let configuration: Configuration
    private let routes: RouteTable
    private let services: GatewayServices
    private var logger: Logger { services.logger }
    private let decoder: ByteToMessageHandler<HTTPRequestDecoder>
    private let encoder: HTTPResponseEncoder
    private var state: State = .idle
    private var headerTimer: Scheduled<Void>?
    private var request: RequestRecord?
    /// A `read()` was held back (backpressure, or a request in flight); issue it when free.
    private var readHeld = false
    /// The exchange asked not to read the client (its backend cannot take more).
    private var clientReadsPaused = false
    /// The current request's end was read: nothing more is read until it is answered, so
    /// pipelined requests are answered in order.
    private var requestEnded = false
    /// Request parts read while authentication decides, replayed to the exchange.
    private var heldParts: [HTTPServerRequestPart] = []
    /// Parts of pipelined requests that arrived while an earlier one was in flight.
    private var queued: [HTTPServerRequestPart] = []
    private let pool: UpstreamPool

    init(
        configuration: Configuration, routes: RouteTable, services: GatewayServices,
        decoder: ByteToMessageHandler<HTTPRequestDecoder>, encoder: HTTPResponseEncoder
    ) {
        self.pool = services.pool
        self.configuration = configuration
        self.routes = routes
        self.services = services
        self.decoder = decoder
        self.encoder = encoder
    }

    // MARK: Lifecycle

    func handlerAdded(context: ChannelHandlerContext) {
        if context.channel.isActive { armHeaderTimer(context: context) }
    }

    func channelActive(context: ChannelHandlerContext) {
        armHeaderTimer(context: context)
        context.fireChannelActive()
    }

    func channelInactive(context: ChannelHandlerContext) {
        headerTimer?.cancel()
        if case .upgrading(let upgrade) = state { upgrade.cancel() }
        if case .proxying(let exchange) = state { exchange.cancel() }
        state = .done
        context.fireChannelInactive()
    }

    private func armHeaderTimer(context: ChannelHandlerContext) {
        headerTimer?.cancel()
        let timeout = TimeAmount(configuration.limits.headerTimeout)
        headerTimer = context.eventLoop.assumeIsolated().scheduleTask(in: timeout) { [self] in
            guard case .idle = state else { return }
            respondAndClose(context: context, .requestTimeout, "request head not received in time")
        }
    }

    // MARK: Reads

    func read(context: ChannelHandlerContext) {
        switch state {
        case .upgrading, .authorizing:
            readHeld = true
        case .proxying where clientReadsPaused || requestEnded:
            readHeld = true
        default:
            context.read()
        }
    }

    private func resumeReading(_ context: ChannelHandlerContext) {
        guard readHeld else { return }
        readHeld = false
        context.read()
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        if case .proxying(let exchange) = state { exchange.requestReadComplete() }
        context.fireChannelReadComplete()
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if case .proxying(let exchange) = state { exchange.clientWritabilityChanged(context.channel.isWritable) }
        context.fireChannelWritabilityChanged()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let part = unwrapInboundIn(data)
        // Pipelined requests parsed while one is still being proxied wait their turn, so
        // answers go out in order.
        if !queued.isEmpty || isBusyWithEarlierRequest {
            queued.append(part)
            return
        }
        handle(part, context: context)
    }

    /// The current request was read to its end and is still being answered.
    private var isBusyWithEarlierRequest: Bool {
        switch state {
        case .proxying, .authorizing: requestEnded
        default: false
        }
    }

    /// Replays pipelined requests once the connection is free again.
    private func drainQueued(_ context: ChannelHandlerContext) {
        while !queued.isEmpty, !isBusyWithEarlierRequest {
            if case .done = state { queued = []; return }
            handle(queued.removeFirst(), context: context)
        }
    }

    private func handle(_ part: HTTPServerRequestPart, context: ChannelHandlerContext) {
        switch part {
        case .head(let head):
            guard case .idle = state else { return }
            headerTimer?.cancel()
            let path = head.uri.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false).first.map(String.init) ?? ""
            request = RequestRecord(
                method: head.method.rawValue, path: path, client: nil,
                userAgent: head.headers.first(name: "user-agent"), startedAt: .now()
            )
            requestEnded = false
            let answer = answer(for: head, context: context)
            if case .proxy(let route, let head, let path, let identity) = answer {
                startProxy(context: context, route: route, head: head, path: path, identity: identity)
            } else {
                state = .pending(answer)
            }
        case .body(let buffer):
            switch state {
            case .proxying(let exchange): exchange.requestBody(buffer)
            case .authorizing: heldParts.append(.body(buffer))
            default: break
            }
        case .end:
            requestEnded = true
            switch state {
            case .proxying(let exchange): exchange.requestEnd()
            case .authorizing: heldParts.append(.end(nil))
            case .pending(let answer): perform(answer, context: context)
            default: break
            }
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        switch state {
        case .idle, .pending:
            if let parserError = error as? HTTPParserError {
                let status: HTTPResponseStatus = parserError == .headerOverflow ? .requestHeaderFieldsTooLarge : .badRequest
                respondAndClose(context: context, status, status == .badRequest ? "malformed request" : "request head too large")
            } else {
                context.close(promise: nil)
            }
        case .proxying(let exchange) where !exchange.responseStarted:
            // A malformed body (bad chunk syntax) after a good head: nothing was answered yet.
            exchange.cancel()
            respondAndClose(context: context, .badRequest, "malformed request")
        case .upgrading, .authorizing, .proxying, .done:
            context.close(promise: nil)
        }
    }

    // MARK: Decisions

    /// Decides the answer from the head alone: limits, framing, routing, upgrade validation.
    private func answer(for head: HTTPRequestHead, context: ChannelHandlerContext) -> Answer {
        let keepAlive = head.isKeepAlive
        let isHead = head.method == .HEAD
        func refuse(_ status: HTTPResponseStatus, _ message: String, headers: [(String, String)] = [], close: Bool = false) -> Answer {
            .respond(status, message, headers: headers, keepAlive: keepAlive && !close, head: isHead)
        }
        let limits = configuration.limits
        if head.method.rawValue.utf8.count + head.uri.utf8.count + 10 > limits.maxRequestLine {
            return refuse(.uriTooLong, "request line longer than \(limits.maxRequestLine) bytes", close: true)
        }
        var headerBytes = 0
        for (name, value) in head.headers { headerBytes += name.utf8.count + value.utf8.count + 4 }
        if head.headers.count > limits.maxHeaders || headerBytes > limits.maxHeaderBytes {
            return refuse(.requestHeaderFieldsTooLarge, "request headers exceed \(limits.maxHeaders) fields or \(limits.maxHeaderBytes) bytes", close: true)
        }
        let lengths = head.headers[canonicalForm: "content-length"]
        if head.headers.contains(name: "transfer-encoding") && !lengths.isEmpty {
            return refuse(.badRequest, "both Content-Length and Transfer-Encoding", close: true)
        }
        if Set(lengths).count > 1 {
            return refuse(.badRequest, "conflicting Content-Length values", close: true)
        }
        let codings = head.headers[canonicalForm: "transfer-encoding"]
        if !codings.isEmpty && (codings.count != 1 || codings[0].lowercased() != "chunked") {
            // Only a lone, final `chunked` is framing Sluice and every backend read the same way.
            return refuse(.badRequest, "Transfer-Encoding other than chunked", close: true)
        }
        if head.version.major == 1 && head.version.minor >= 1 && head.headers[canonicalForm: "host"].count != 1 {
            return refuse(.badRequest, "exactly one Host header is required", close: true)
        }
        let path: RequestPath
        do {
            path = try RequestPath.parse(head.uri)
        } catch {
            return refuse(.badRequest, "invalid request target", close: true)
        }
        let host = head.headers.first(name: "host")
        let identity = identify(head, context: context)
        request?.client = identity.address
        guard let route = routes.route(host: host, path: path.path) else {
            return refuse(.notFound, "no route for this host and path")
        }
        request?.route = route.name
        if route.configuration.builtin == .demo {
            guard head.method == .GET || head.method == .HEAD else {
                return refuse(.methodNotAllowed, "only GET and HEAD", headers: [("Allow", "GET, HEAD")])
            }
            return .demoPage(head: isHead, keepAlive: keepAlive)
        }
        guard UpgradeRequest.isAttempt(head) else {
            if route.servesHTTP {
                // Browsers send Origin on cross-site requests that can change state; a request
                // without one (a navigation, a non-browser client) is not refused for that.
                if let policy = route.configuration.origin, let origin = head.headers.first(name: "origin"), !policy.allows(origin) {
                    request?.rejection = "origin_rejected"
                    return refuse(.forbidden, "this origin may not call this route")
                }
                if let rejection = route.limiter?.admitRequest(ip: identity.address ?? Self.unknownAddress) {
                    services.metrics.limitRejected(rejection)
                    request?.rejection = rejection.label
                    return refuse(rejection.status, rejection.message, headers: [("Retry-After", String(rejection.retryAfter))])
                }
                return .proxy(route, head, path, identity)
            }
            return refuse(.upgradeRequired, "this route accepts WebSocket connections only", headers: [("Upgrade", "websocket")])
        }
        let upgrade: UpgradeRequest
        do {
            upgrade = try UpgradeRequest.validate(head, allowedProtocols: route.websocket.subprotocols)
        } catch {
            services.metrics.upgrade(route: route.name, result: "bad_request")
            request?.rejection = "bad_request"
            return refuse(error.status, error.message, headers: error.headers, close: true)
        }
        if let policy = route.configuration.origin, !policy.allows(head.headers.first(name: "origin")) {
            services.metrics.upgrade(route: route.name, result: "origin_rejected")
            request?.rejection = "origin_rejected"
            return refuse(.forbidden, "this origin may not open WebSockets here", close: true)
        }
        return .upgrade(route, head, upgrade, path, identity)
    }

    /// Counted as one address when the peer's cannot be read (a Unix socket in tests).
    private static let unknownAddress = IPAddress(bytes: [0, 0, 0, 0])!

    private var peerAddress: IPAddress??

    private func identify(_ head: HTTPRequestHead, context: ChannelHandlerContext) -> ClientIdentity {
        if peerAddress == nil { peerAddress = .some(ClientAddress.ip(of: context.channel.remoteAddress)) }
        let peer = peerAddress ?? nil
        let trusted = services.trustedProxies
        let peerIsTrusted = peer.map { ClientAddress.isTrusted($0, trusted) } ?? false
        let address = peerIsTrusted ? ClientAddress.resolve(peer: peer, headers: head.headers, trusted: trusted) : peer
        return ClientIdentity(peer: peer, address: address, peerIsTrustedProxy: peerIsTrusted)
    }

    private func perform(_ answer: Answer, context: ChannelHandlerContext) {
        switch answer {
        case .respond(let status, let message, let headers, let keepAlive, let isHead):
            respond(context: context, status, body: message + "\n", contentType: "text/plain; charset=utf-8", headers: headers, keepAlive: keepAlive, omitBody: isHead)
        case .demoPage(let isHead, let keepAlive):
            respond(context: context, .ok, body: DemoPage.html, contentType: "text/html; charset=utf-8", headers: [("Cache-Control", "no-store")], keepAlive: keepAlive, omitBody: isHead)
        case .proxy:
            break  // started at the head, so the body can stream
        case .upgrade(let route, let head, let upgrade, let path, let identity):
            authorize(context: context, route: route, head: head, path: path, identity: identity) { [self] user in
                admit(context: context, route: route, head: head, upgrade: upgrade, path: path, identity: identity, user: user)
            }
        }
    }

    /// Runs the route's authentication (none on public routes) with reads held, then `admitted`
    /// with the identity, or answers the refusal.
    private func authorize(
        context: ChannelHandlerContext, route: Route, head: HTTPRequestHead, path: RequestPath, identity: ClientIdentity,
        admitted: @escaping (Identity?) -> Void
    ) {
        guard let authenticator = route.authenticator else {
            admitted(nil)
            return
        }
        state = .authorizing
        heldParts = []
        let authRequest = RouteAuthenticator.Request(head: head, query: path.query, client: identity.address, tls: configuration.tls)
        authenticator.authenticate(authRequest, on: context.eventLoop).assumeIsolated().whenComplete { [self] result in
            guard case .authorizing = state else { return }
            switch result {
            case .success(.success(let user)):
                admitted(user)
            case .success(.failure(let refusal)):
                refuse(context: context, route: route, refusal)
            case .failure:
                refuse(context: context, route: route, AuthRefusal(
                    status: .serviceUnavailable, message: "authentication is unavailable; retry later", headers: [], result: "auth_unavailable"
                ))
            }
        }
    }

    // MARK: Plain HTTP

    private func startProxy(context: ChannelHandlerContext, route: Route, head: HTTPRequestHead, path: RequestPath, identity: ClientIdentity) {
        authorize(context: context, route: route, head: head, path: path, identity: identity) { [self] user in
            beginExchange(context: context, route: route, head: head, path: path, identity: identity, user: user)
        }
    }

    private func beginExchange(context: ChannelHandlerContext, route: Route, head: HTTPRequestHead, path: RequestPath, identity: ClientIdentity, user: Identity?) {
        guard let backends = route.backends else { return }
        request?.user = user?.user
        var target = PathPrefix.rewrite(path.target, matched: route.configuration.match.pathPrefix, settings: route.configuration.http)
        for parameter in route.credentialQueryParameters { target = QueryString.removing(parameter, from: target) }
        let client = ForwardedHeaders.Client(
            address: identity.peer?.description, host: head.headers.first(name: "host"), tls: configuration.tls,
            trustsIncomingChain: identity.peerIsTrustedProxy
        )
        let downstream = HTTPProxyExchange.Downstream(
            context: context,
            pauseClientReads: { [self] paused in
                clientReadsPaused = paused
                if !paused { resumeReading(context) }
            },
            respond: { [self] status, message, result, keepAlive in
                request?.rejection = result
                clientReadsPaused = false
                respond(context: context, status, body: message + "\n", contentType: "text/plain; charset=utf-8", keepAlive: keepAlive)
                if keepAlive {
                    drainQueued(context)
                    if case .proxying(let next) = state { next.requestReadComplete() }
                    if case .idle = state { resumeReading(context) }
                }
            },
            finished: { [self] status, bytes, reusable, written in
                logRequest(status: status, bytes: bytes)
                clientReadsPaused = false
                if reusable {
                    state = .idle
                    armHeaderTimer(context: context)
                    drainQueued(context)
                    if case .proxying(let next) = state { next.requestReadComplete() }
                    if case .idle = state { resumeReading(context) }
                } else {
                    state = .done
                    written.assumeIsolated().whenComplete { _ in context.close(promise: nil) }
                }
            },
            abort: { [self] in
                state = .done
                context.close(promise: nil)
            }
        )
        let exchange = HTTPProxyExchange(
            route: route, backends: backends,
            request: .init(head: head, target: target, client: client, clientIP: identity.address, identity: user),
            downstream: downstream, pool: pool, services: services
        )
        state = .proxying(exchange)
        exchange.start()
        let held = heldParts
        heldParts = []
        for part in held {
            switch part {
            case .body(let buffer): exchange.requestBody(buffer)
            case .end: exchange.requestEnd()
            case .head: break
            }
        }
        if !held.isEmpty { exchange.requestReadComplete() }
    }

    /// The route's limits, then the backend.
    private func admit(
        context: ChannelHandlerContext, route: Route, head: HTTPRequestHead, upgrade: UpgradeRequest, path: RequestPath,
        identity: ClientIdentity, user: Identity?
    ) {
        request?.user = user?.user
        if let limiter = route.limiter {
            switch limiter.admit(ip: identity.address ?? Self.unknownAddress, user: user?.user) {
            case .success(let lease):
                // The client channel closes exactly once, on every path (relay end, refusal,
                // error, timeout), so its close is where the count is given back.
                context.channel.closeFuture.whenComplete { _ in lease.release() }
            case .failure(let rejection):
                services.metrics.upgrade(route: route.name, result: rejection.upgradeResult)
                services.metrics.limitRejected(rejection)
                request?.rejection = rejection.label
                respond(
                    context: context, rejection.status, body: rejection.message + "\n", contentType: "text/plain; charset=utf-8",
                    headers: [("Retry-After", String(rejection.retryAfter))], keepAlive: false
                )
                return
            }
        }
        startUpgrade(context: context, route: route, head: head, request: upgrade, path: path, identity: identity, user: user)
    }

    private func refuse(context: ChannelHandlerContext, route: Route, _ refusal: AuthRefusal) {
        services.metrics.upgrade(route: route.name, result: refusal.result)
        request?.rejection = refusal.result
        if let body = refusal.body {
            let contentType = refusal.headers.first { $0.0.lowercased() == "content-type" }?.1 ?? "text/plain; charset=utf-8"
            let headers = refusal.headers.filter { $0.0.lowercased() != "content-type" }
            respond(context: context, refusal.status, body: String(decoding: body, as: UTF8.self), contentType: contentType, headers: headers, keepAlive: false)
        } else {
            respond(context: context, refusal.status, body: refusal.message + "\n", contentType: "text/plain; charset=utf-8", headers: refusal.headers, keepAlive: false)
        }
    }

    private func startUpgrade(
        context: ChannelHandlerContext, route: Route, head: HTTPRequestHead, request upgradeRequest: UpgradeRequest,
        path: RequestPath, identity: ClientIdentity, user: Identity?
    ) {
        let client = ForwardedHeaders.Client(
            address: identity.peer?.description, host: head.headers.first(name: "host"), tls: configuration.tls,
            trustsIncomingChain: identity.peerIsTrustedProxy
        )
        let downstream = WebSocketUpgrade.Downstream(
            context: context,
            respond: { [self] status, message, result in
                request?.rejection = result
                respondAndClose(context: context, status, message)
            },
            switchToRelay: { [self] head, relayHandler in switchToRelay(context: context, head: head, relayHandler: relayHandler) }
        )
        let origin = WebSocketUpgrade.Origin(
            listener: configuration.listener, client: client, clientAddress: identity.address?.description ?? "unknown",
            path: request?.path ?? path.path, identity: user, clientIP: identity.address
        )
        var target = path.target
        for parameter in route.credentialQueryParameters { target = QueryString.removing(parameter, from: target) }
        let upgrade = WebSocketUpgrade(
            downstream: downstream, route: route, clientHead: head, upgrade: upgradeRequest, requestTarget: target,
            origin: origin, services: services
        ) { [self] outcome in
            switch outcome {
            case .relaying:
                request = nil
            case .responded(let status):
                if let status { logRequest(status: status, bytes: 0) }
                state = .done
            }
        }
        state = .upgrading(upgrade)
        upgrade.start()
    }

    /// Writes the 101 and leaves the pipeline to the relay; bytes the decoder still holds go to
    /// the relay handler, in order.
    private func switchToRelay(context: ChannelHandlerContext, head: HTTPResponseHead, relayHandler: RelayHandler) -> EventLoopFuture<Void> {
        state = .done
        context.writeAndFlush(wrapOutboundOut(.head(head)), promise: nil)
        let pipeline = context.pipeline.syncOperations
        do {
            try pipeline.addHandler(relayHandler)
        } catch {
            context.close(promise: nil)
            return context.eventLoop.makeFailedFuture(error)
        }
        let channel = context.channel
        _ = pipeline.removeHandler(context: context)
        _ = pipeline.removeHandler(encoder)
        let decoderGone = pipeline.removeHandler(decoder)
        channel.read()
        return decoderGone
    }

    // MARK: Responses

    /// Writes the access-log line and counts the request, once per request.
    private func logRequest(status: HTTPResponseStatus, bytes: Int) {
        services.metrics.httpRequest(listener: configuration.listener, route: request?.route, status: status.code)
        guard let request else { return }
        self.request = nil
        guard let accessLog = services.accessLog else { return }
        var record = AccessRecord(type: "http")
        record.set("listener", configuration.listener)
        record.set("route", request.route)
        record.set("client", request.client?.description)
        record.set("user", request.user)
        record.set("method", request.method)
        record.set("path", request.path)
        record.set("status", status.code)
        record.set("bytes_sent", bytes)
        record.set("duration_ms", Double((NIODeadline.now() - request.startedAt).nanoseconds / 1000) / 1000)
        record.set("user_agent", request.userAgent)
        if let rejection = request.rejection { record.set("rejection", rejection) }
        accessLog.write(record)
    }

    private func respond(
        context: ChannelHandlerContext, _ status: HTTPResponseStatus, body: String, contentType: String,
        headers extra: [(String, String)] = [], keepAlive: Bool, omitBody: Bool = false
    ) {
        logRequest(status: status, bytes: omitBody ? 0 : body.utf8.count)
        var headers = HTTPHeaders()
        headers.add(name: "Content-Type", value: contentType)
        headers.add(name: "Content-Length", value: "\(body.utf8.count)")
        headers.add(name: "Server", value: "sluice")
        for (name, value) in extra { headers.add(name: name, value: value) }
        if !keepAlive { headers.add(name: "Connection", value: "close") }
        context.write(wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: status, headers: headers))), promise: nil)
        if !omitBody {
            var buffer = context.channel.allocator.buffer(capacity: body.utf8.count)
            buffer.writeString(body)
            context.write(wrapOutboundOut(.body(.byteBuffer(buffer))), promise: nil)
        }
        if keepAlive {
            context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
            state = .idle
            armHeaderTimer(context: context)
        } else {
            state = .done
            context.writeAndFlush(wrapOutboundOut(.end(nil))).assumeIsolated().whenComplete { _ in
                Self.lingeringClose(context)
            }
        }
    }

    /// Closes after a response the client may still be sending a body to: output first (the
    /// client reads the answer and a FIN), then, after a grace period or the client's own close,
    /// the rest. Closing at once with unread input would send a reset that can destroy the
    /// answer in flight (a 413 to an upload, say).
    static func lingeringClose(_ context: ChannelHandlerContext) {
        let channel = context.channel
        context.close(mode: .output).assumeIsolated().whenComplete { result in
            if case .failure = result {
                channel.close(promise: nil)
                return
            }
            channel.eventLoop.scheduleTask(in: .seconds(2)) { channel.close(promise: nil) }
            channel.read()
        }
    }

    private func respondAndClose(context: ChannelHandlerContext, _ status: HTTPResponseStatus, _ message: String) {
        respond(context: context, status, body: message + "\n", contentType: "text/plain; charset=utf-8", keepAlive: false)
    }
}
