import CoreMetrics
import Logging
import NIOCore
import NIOHTTP1
import SluiceConfig

/// Serves one client connection's HTTP/1.1 requests: limits, routing, and the hand-off of
/// WebSocket upgrades to `WebSocketUpgrade`.
///
/// Requests are answered one at a time and in order, so keep-alive and pipelining are safe.
/// While an upgrade is in flight the handler withholds `read()`, so bytes the client sends
/// early stay in the decoder and reach the relay in order. While a plain request is proxied the
/// client is still read (holding reads would cost two `epoll_ctl` calls per request): requests
/// pipelined behind it wait in `queued`, and reads stop only once something is queued.
final class HTTPGatewayHandler: ChannelDuplexHandler, RemovableChannelHandler, HTTPProxyDownstream {
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
    enum State {
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
    enum Answer {
        case respond(HTTPResponseStatus, String, headers: [(String, String)], keepAlive: Bool, head: Bool)
        case demoPage(head: Bool, keepAlive: Bool)
        case upgrade(Route, HTTPRequestHead, UpgradeRequest, RequestPath, ClientIdentity)
        case proxy(Route, HTTPRequestHead, RequestPath, ClientIdentity, RequestFraming)
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
    struct RequestRecord {
        var method: String
        /// The request target as it came; logged without its query string.
        var uri: String
        /// The path without its query string, which may carry credentials.
        var path: String {
            uri.utf8.firstIndex(of: UInt8(ascii: "?")).map { String(uri[..<$0]) } ?? uri
        }
        var route: String?
        var client: IPAddress?
        var user: String?
        /// Read only when there is an access log to write it to.
        var userAgent: String?
        var startedAt: NIODeadline
        /// Why an upgrade was refused (a result label, or the limit's name).
        var rejection: String?
    }

    let configuration: Configuration
    /// `configuration`'s header timeout, converted once: it is armed before every request.
    let headerTimeout: TimeAmount
    /// The listener's routing, read again when a reload has replaced it (kept-alive connections
    /// see new routes at their next request).
    var routing: RoutingView
    /// The gateway is draining: the current answer is the last on this connection.
    var quiescing = false
    let services: GatewayServices
    var logger: Logger { services.logger }
    /// NIO's request decoder: in the pipeline once the fast path has stepped aside for it,
    /// which every upgrade request makes it do.
    let decoder: ByteToMessageHandler<HTTPRequestDecoder>
    let encoder: HTTPResponseEncoder
    var state: State = .idle
    /// The connection's one timer. It is re-armed only when a deadline comes sooner than the
    /// one it waits for; when it fires it looks at what is due (the next request head, or the
    /// exchange's response and body deadlines) and sleeps again if nothing is. Scheduling and
    /// cancelling three timers per request cost about 6% of a proxied request's CPU.
    var watchdog: Scheduled<Void>?
    var watchdogDeadline: NIODeadline?
    /// When the next request head must have arrived; nil while a request is being answered.
    var headerDeadline: NIODeadline?
    var request: RequestRecord?
    /// The current request's first `Host` value.
    var requestHost: String?
    /// The current request lets the connection stay open (its version and `Connection`).
    var requestKeepAlive = false
    /// The HTTP encoder's context, found at the first proxied request.
    var encoderContext: ChannelHandlerContext?
    /// The forwarding fields of this connection's requests, by `Host` (they depend on nothing else
    /// unless a trusted proxy sends a chain).
    var forwardingCache: (host: String?, block: ByteBuffer)?
    /// The requests counter the last answer on this connection counted in.
    var lastRequestCounter: (route: String?, status: UInt, counter: CoreMetrics.Counter)?
    /// A `read()` was held back (backpressure, or a request in flight); issue it when free.
    var readHeld = false
    /// The exchange asked not to read the client (its backend cannot take more).
    var clientReadsPaused = false
    /// The current request's end was read: nothing more is read until it is answered, so
    /// pipelined requests are answered in order.
    var requestEnded = false
    /// Request parts read while authentication decides, replayed to the exchange.
    var heldParts: [HTTPServerRequestPart] = []
    /// Parts of pipelined requests that arrived while an earlier one was in flight.
    var queued: [HTTPServerRequestPart] = []
    /// The client half-closed (plain listeners): what it sent is answered, then the connection
    /// closes.
    var clientInputClosed = false
    let pool: UpstreamPool
    /// This handler's context while it is in the pipeline (exchanges call back through it).
    var context: ChannelHandlerContext?

    init(
        configuration: Configuration, routing: ListenerRouting, services: GatewayServices,
        decoder: ByteToMessageHandler<HTTPRequestDecoder>, encoder: HTTPResponseEncoder
    ) {
        self.pool = services.pool
        self.configuration = configuration
        self.headerTimeout = TimeAmount(configuration.limits.headerTimeout)
        self.routing = RoutingView(routing)
        self.services = services
        self.decoder = decoder
        self.encoder = encoder
    }

    /// The HTTP side of a client connection, after TLS if any: the response encoder, the fast
    /// path for simple request heads (which puts NIO's request decoder in its place when it
    /// meets anything else), and the gateway.
    static func install(
        on pipeline: ChannelPipeline.SynchronousOperations, configuration: Configuration, routing: ListenerRouting, services: GatewayServices
    ) throws {
        let decoder = ByteToMessageHandler(HTTPRequestDecoder(leftOverBytesStrategy: .forwardBytes))
        let encoder = HTTPResponseEncoder()
        try pipeline.addHandler(encoder)
        let gateway = HTTPGatewayHandler(configuration: configuration, routing: routing, services: services, decoder: decoder, encoder: encoder)
        try pipeline.addHandler(RequestFastPath(decoder: decoder, gateway: gateway))
        try pipeline.addHandler(gateway)
    }

    // MARK: Lifecycle

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        if context.channel.isActive { armHeaderTimer(context: context) }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        stopWatchdog()
        self.context = nil
        encoderContext = nil
    }

    func channelActive(context: ChannelHandlerContext) {
        armHeaderTimer(context: context)
        context.fireChannelActive()
    }

    func channelInactive(context: ChannelHandlerContext) {
        stopWatchdog()
        if case .upgrading(let upgrade) = state { upgrade.cancel() }
        if case .proxying(let exchange) = state { exchange.cancel() }
        state = .done
        context.fireChannelInactive()
    }

    func armHeaderTimer(context: ChannelHandlerContext) {
        let deadline = context.eventLoop.now + headerTimeout
        headerDeadline = deadline
        watch(until: deadline, context: context)
    }

    /// Makes sure the watchdog fires no later than `deadline`.
    func watch(until deadline: NIODeadline, context: ChannelHandlerContext) {
        if let pending = watchdogDeadline, pending <= deadline { return }
        watchdog?.cancel()
        watchdogDeadline = deadline
        watchdog = context.eventLoop.assumeIsolated().scheduleTask(deadline: deadline) { [self] in
            watchdog = nil
            watchdogDeadline = nil
            watchdogFired(context: context)
        }
    }

    private func watchdogFired(context: ChannelHandlerContext) {
        let now = context.eventLoop.now
        switch state {
        case .idle:
            guard let deadline = headerDeadline else { return }
            if deadline <= now {
                respondAndClose(context: context, .requestTimeout, "request head not received in time")
            } else {
                watch(until: deadline, context: context)
            }
        case .proxying(let exchange):
            if let next = exchange.checkDeadlines(now: now) { watch(until: next, context: context) }
        default:
            break
        }
    }

    func stopWatchdog() {
        watchdog?.cancel()
        watchdog = nil
        watchdogDeadline = nil
        headerDeadline = nil
    }

    // MARK: Reads

    func read(context: ChannelHandlerContext) {
        switch state {
        case .upgrading, .authorizing:
            readHeld = true
        case .proxying where clientReadsPaused || (requestEnded && !queued.isEmpty):
            readHeld = true
        default:
            context.read()
        }
    }

    func resumeReading(_ context: ChannelHandlerContext) {
        guard readHeld else { return }
        readHeld = false
        context.read()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let event = event as? ChannelEvent, event == .inputClosed {
            clientInputClosed = true
            closeIfClientDone(context)
        }
        if event is ChannelShouldQuiesceEvent {
            // Draining: an idle connection closes now; a busy one after its answer.
            quiescing = true
            if case .idle = state, queued.isEmpty {
                state = .done
                stopWatchdog()
                closeAfterWrites(context, nil)
            }
        }
        context.fireUserInboundEventTriggered(event)
    }

    /// After the client half-closed: once nothing it sent is left to answer, close when the
    /// last answer is written.
    func closeIfClientDone(_ context: ChannelHandlerContext) {
        guard clientInputClosed, case .idle = state, queued.isEmpty else { return }
        state = .done
        stopWatchdog()
        closeAfterWrites(context, nil)
    }

    /// Closes once everything written so far is out: after `written` if given, otherwise after
    /// an empty write queued behind the rest (writes complete in order), so no response needs
    /// to keep a promise in case the connection closes after it.
    func closeAfterWrites(_ context: ChannelHandlerContext, _ written: EventLoopFuture<Void>?) {
        let done = written ?? responseBytesContext(context).writeAndFlush(NIOAny(ByteBuffer()))
        done.assumeIsolated().whenComplete { _ in context.close(promise: nil) }
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
        receive(unwrapInboundIn(data), vetted: nil, context: context)
    }

    /// A request part from NIO's decoder (through `channelRead`), or straight from the fast path
    /// in front of this handler with what it already learned of the head.
    func receive(_ part: HTTPServerRequestPart, vetted: SimpleRequestHead.Vetted?, context: ChannelHandlerContext) {
        // Pipelined requests parsed while one is still being proxied wait their turn, so
        // answers go out in order (the head is read again then).
        if !queued.isEmpty || isBusyWithEarlierRequest {
            queued.append(part)
            return
        }
        handle(part, vetted: vetted, context: context)
    }

    /// The current request was read to its end and is still being answered.
    var isBusyWithEarlierRequest: Bool {
        switch state {
        case .proxying, .authorizing: requestEnded
        default: false
        }
    }

    /// Replays pipelined requests once the connection is free again.
    func drainQueued(_ context: ChannelHandlerContext) {
        while !queued.isEmpty, !isBusyWithEarlierRequest {
            if case .done = state { queued = []; return }
            handle(queued.removeFirst(), context: context)
        }
    }

    func handle(_ part: HTTPServerRequestPart, vetted: SimpleRequestHead.Vetted? = nil, context: ChannelHandlerContext) {
        switch part {
        case .head(let head):
            guard case .idle = state else { return }
            headerDeadline = nil
            // An absolute-form target's authority is the request's host, not its Host field
            // (RFC 9112 §3.2.2): routing and the Host forwarded follow the same one.
            requestHost = RequestPath.authority(of: head.uri) ?? vetted.map { $0.host } ?? head.headers.first(name: "host")
            // After a head that offers an upgrade, NIO's decoder reads no further requests on
            // the connection, so one answered as plain HTTP (`h2c`, a refused WebSocket) ends it.
            requestKeepAlive = !quiescing && (vetted?.keepAlive ?? (head.isKeepAlive && !UpgradeRequest.offersUpgrade(head)))
            request = RequestRecord(
                method: head.method.rawValue, uri: head.uri, client: nil,
                userAgent: services.accessLog.isEnabled ? head.headers.first(name: "user-agent") : nil, startedAt: .now()
            )
            requestEnded = false
            let answer = answer(for: head, vetted: vetted, context: context)
            if case .proxy(let route, let head, let path, let identity, let framing) = answer {
                startProxy(context: context, route: route, head: head, path: path, identity: identity, framing: framing)
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
    /// A head the fast path `vetted` is not read again for what it learned (`handle` has set
    /// `requestHost` and `requestKeepAlive` from it).
    func answer(for head: HTTPRequestHead, vetted: SimpleRequestHead.Vetted?, context: ChannelHandlerContext) -> Answer {
        let keepAlive = requestKeepAlive
        let isHead = head.method == .HEAD
        func refuse(_ status: HTTPResponseStatus, _ message: String, headers: [(String, String)] = [], close: Bool = false) -> Answer {
            .respond(status, message, headers: headers, keepAlive: keepAlive && !close, head: isHead)
        }
        let limits = configuration.limits
        if head.method.rawValue.utf8.count + head.uri.utf8.count + 10 > limits.maxRequestLine {
            return refuse(.uriTooLong, "request line longer than \(limits.maxRequestLine) bytes", close: true)
        }
        let framing = vetted?.framing ?? RequestFraming.read(head.headers)
        if framing.fieldCount > limits.maxHeaders || framing.fieldBytes > limits.maxHeaderBytes {
            return refuse(.requestHeaderFieldsTooLarge, "request headers exceed \(limits.maxHeaders) fields or \(limits.maxHeaderBytes) bytes", close: true)
        }
        if let problem = framing.problem { return refuse(.badRequest, problem.message, close: true) }
        if framing.hostCount > 1 || (head.version.major == 1 && head.version.minor >= 1 && framing.hostCount != 1) {
            return refuse(.badRequest, "exactly one Host header is required", close: true)
        }
        if framing.authorizationCount > 1 { return refuse(.badRequest, "more than one Authorization header", close: true) }
        if framing.originCount > 1 { return refuse(.badRequest, "more than one Origin header", close: true) }
        if let host = requestHost, !HTTPSyntax.isValidHost(host) {
            return refuse(.badRequest, "invalid Host header", close: true)
        }
        let path: RequestPath
        do {
            path = try RequestPath.parse(head.uri)
        } catch {
            return refuse(.badRequest, "invalid request target", close: true)
        }
        let routing = self.routing.refresh()
        let identity = identify(head, trusted: routing.trustedProxies, context: context)
        request?.client = identity.address
        guard let route = routing.routes.route(host: requestHost, path: path.path) else {
            return refuse(.notFound, "no route for this host and path")
        }
        request?.route = route.name
        if route.configuration.builtin == .demo {
            // The page itself, not a catch-all: /favicon.ico and friends are 404s.
            guard DemoPage.serves(path.path, prefix: route.configuration.match.pathPrefix) else {
                return refuse(.notFound, "no such page")
            }
            guard head.method == .GET || head.method == .HEAD else {
                return refuse(.methodNotAllowed, "only GET and HEAD", headers: [("Allow", "GET, HEAD")])
            }
            return .demoPage(head: isHead, keepAlive: keepAlive)
        }
        guard vetted == nil && UpgradeRequest.isAttempt(head) else {
            if route.servesHTTP {
                // Browsers send Origin on cross-site requests that can change state; a request
                // without one (a navigation, a non-browser client) is not refused for that.
                if let policy = route.configuration.origin, let origin = head.headers.first(name: "origin"), !policy.allows(origin) {
                    request?.rejection = "origin_rejected"
                    return refuse(.forbidden, "this origin may not call this route")
                }
                if let rejection = route.limiter.admitRequest(ip: identity.address ?? Self.unknownAddress) {
                    services.metrics.limitRejected(rejection)
                    request?.rejection = rejection.label
                    return refuse(rejection.status, rejection.message, headers: [("Retry-After", String(rejection.retryAfter))])
                }
                return .proxy(route, head, path, identity, framing)
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
    static let unknownAddress = IPAddress(bytes: [0, 0, 0, 0])!

    var peerAddress: IPAddress??
    /// The peer's address as text, made once per connection.
    var peerText: String??

    /// Who asked, as the backend is told in the forwarding headers.
    func forwardingClient(_ head: HTTPRequestHead, _ identity: ClientIdentity) -> ForwardedHeaders.Client {
        if peerText == nil { peerText = .some(identity.peer?.description) }
        return ForwardedHeaders.Client(
            address: peerText ?? nil, host: requestHost, tls: configuration.tls,
            trustsIncomingChain: identity.peerIsTrustedProxy,
            keepsUnderscoreFields: configuration.limits.underscoreHeaders == .keep
        )
    }

    func identify(_ head: HTTPRequestHead, trusted: [CIDR], context: ChannelHandlerContext) -> ClientIdentity {
        if peerAddress == nil { peerAddress = .some(ClientAddress.ip(of: context.channel.remoteAddress)) }
        let peer = peerAddress ?? nil
        let peerIsTrusted = peer.map { ClientAddress.isTrusted($0, trusted) } ?? false
        let address = peerIsTrusted ? ClientAddress.resolve(peer: peer, headers: head.headers, trusted: trusted) : peer
        return ClientIdentity(peer: peer, address: address, peerIsTrustedProxy: peerIsTrusted)
    }

    func perform(_ answer: Answer, context: ChannelHandlerContext) {
        switch answer {
        case .respond(let status, let message, let headers, let keepAlive, let isHead):
            respond(context: context, status, body: message + "\n", contentType: "text/plain; charset=utf-8", headers: headers, keepAlive: keepAlive, omitBody: isHead)
        case .demoPage(let isHead, let keepAlive):
            respond(context: context, .ok, body: DemoPage.html, contentType: "text/html; charset=utf-8", headers: [("Cache-Control", "no-store")], keepAlive: keepAlive, omitBody: isHead)
        case .proxy:
            break  // started at the head, so the body can stream
        case .upgrade(let route, let head, let upgrade, let path, let identity):
            let target = route.upstreamTarget(for: path, upgrade: true)
            authorize(context: context, route: route, head: head, path: path, target: target, identity: identity) { [self] user in
                admit(context: context, route: route, head: head, upgrade: upgrade, path: path, target: target, identity: identity, user: user)
            }
        }
    }

    /// Runs the route's authentication (none on public routes) with reads held, then `admitted`
    /// with the identity, or answers the refusal.
    func authorize(
        context: ChannelHandlerContext, route: Route, head: HTTPRequestHead, path: RequestPath, target: String, identity: ClientIdentity,
        admitted: @escaping (Identity?) -> Void
    ) {
        guard let authenticator = route.authenticator else {
            admitted(nil)
            return
        }
        state = .authorizing
        heldParts = []
        let authRequest = RouteAuthenticator.Request(
            head: head, query: path.query, target: target, host: requestHost, client: identity.address, tls: configuration.tls
        )
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

}
