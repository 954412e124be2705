import CoreMetrics
import Logging
import NIOCore
import NIOHTTP1
import SluiceConfig

/// Serves one client connection's HTTP/1.1 requests: limits, routing, and the hand-off of
/// WebSocket upgrades to `WebSocketUpgrade`.
///
/// The connection's phases (one request at a time, in order; reads held while an upgrade is
/// in flight; pipelined requests queued) are `HTTPConnectionStateMachine`'s; this handler feeds
/// it the channel's events and carries out what it returns.
final class HTTPGatewayHandler: ChannelDuplexHandler, RemovableChannelHandler, HTTPProxyDownstream, AdmissionWaiting {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundIn = HTTPServerResponsePart
    typealias OutboundOut = HTTPServerResponsePart

    /// Per-listener settings.
    struct Configuration {
        var listener: String
        var tls: Bool
        var limits: HTTPLimits
        /// The client's address: the socket's peer, or what a trusted balancer's PROXY header
        /// said.
        var peer: IPAddress?
    }

    typealias StateMachine = HTTPConnectionStateMachine<Answer, HTTPProxyExchange, WebSocketUpgrade>

    typealias Answer = RequestAnswer

    let configuration: Configuration
    /// `configuration`'s header timeout, converted once: it is armed before every request.
    let headerTimeout: TimeAmount
    /// The listener's routing, read again when a reload has replaced it (kept-alive connections
    /// see new routes at their next request).
    var routing: RoutingView
    let services: GatewayServices
    var logger: Logger { services.logger }
    /// NIO's request decoder, made and put in the pipeline when the fast path steps aside for
    /// it (a connection whose requests are all simple never makes one).
    var decoder: ByteToMessageHandler<HTTPRequestDecoder>?
    /// The fast path, when it read an upgrade head and keeps what followed it for the relay
    /// (otherwise NIO's decoder read the head and keeps those bytes).
    var upgradeBytes: RequestFastPath?
    let encoder: HTTPResponseEncoder
    var state = StateMachine()
    /// The connection's one timer. It is re-armed only when a deadline comes sooner than the
    /// one it waits for; when it fires it looks at what is due (the next request head, or the
    /// exchange's response and body deadlines) and sleeps again if nothing is. Scheduling and
    /// cancelling three timers per request cost about 6% of a proxied request's CPU.
    var watchdog = DeadlineTimer()
    /// When the next request head must have arrived; nil while a request is being answered.
    var headerDeadline: NIODeadline?
    var request: RequestRecord?
    /// The current request's first `Host` value.
    var requestHost: String?
    /// The current request lets the connection stay open (its version and `Connection`).
    var requestKeepAlive = false
    /// The HTTP encoder's context, found at the first proxied request.
    var encoderContext: ChannelHandlerContext?
    /// The forwarding fields of this connection's requests.
    var forwardingFields = HTTPWireFormat.ForwardingCache()
    /// The requests counter the last answer on this connection counted in.
    var lastRequestCounter: (route: String?, status: UInt, counter: CoreMetrics.Counter)?
    let pool: UpstreamPool
    /// This handler's context while it is in the pipeline (exchanges call back through it).
    var context: ChannelHandlerContext?
    /// What admission reads of this connection, gathered at its first request.
    var admissionConnection: Admission.Connection?
    /// The peer's address as text, made once per connection.
    var peerText: String??

    init(
        configuration: Configuration, routing: ListenerRouting, services: GatewayServices, encoder: HTTPResponseEncoder
    ) {
        self.pool = services.pool
        self.configuration = configuration
        self.headerTimeout = TimeAmount(configuration.limits.headerTimeout)
        self.routing = RoutingView(routing)
        self.services = services
        self.encoder = encoder
    }

    /// The HTTP side of a client connection, after TLS if any: the response encoder, the fast
    /// path for simple request heads (which puts NIO's request decoder in its place when it
    /// meets anything else), and the gateway.
    static func install(
        on pipeline: ChannelPipeline.SynchronousOperations, configuration: Configuration, routing: ListenerRouting, services: GatewayServices
    ) throws {
        let encoder = HTTPResponseEncoder()
        try pipeline.addHandler(encoder)
        let gateway = HTTPGatewayHandler(configuration: configuration, routing: routing, services: services, encoder: encoder)
        try pipeline.addHandler(RequestFastPath(gateway: gateway))
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
        upgradeBytes = nil
    }

    func channelActive(context: ChannelHandlerContext) {
        armHeaderTimer(context: context)
        context.fireChannelActive()
    }

    func channelInactive(context: ChannelHandlerContext) {
        stopWatchdog()
        switch state.close() {
        case .upgrading(let upgrade): upgrade.cancel()
        case .proxying(let exchange): exchange.cancel()
        default: break
        }
        context.fireChannelInactive()
    }

    func armHeaderTimer(context: ChannelHandlerContext) {
        let deadline = context.eventLoop.now + headerTimeout
        headerDeadline = deadline
        watch(until: deadline, context: context)
    }

    /// Makes sure the watchdog fires no later than `deadline`.
    func watch(until deadline: NIODeadline, context: ChannelHandlerContext) {
        guard !watchdog.isPending(atOrBefore: deadline) else { return }
        watchdog.arm(deadline, on: context.eventLoop) { [self] in
            watchdog.fired()
            watchdogFired(context: context)
        }
    }

    private func watchdogFired(context: ChannelHandlerContext) {
        let now = context.eventLoop.now
        switch state.phase {
        case .idle:
            guard let deadline = headerDeadline else { return }
            if deadline <= now {
                respondAndClose(context: context, .requestTimeout, "request head not received in time")
            } else {
                watch(until: deadline, context: context)
            }
        case .proxying(let exchange):
            if let next = exchange.checkDeadlines(now: now) { watch(until: next, context: context) }
        case .upgrading(let upgrade):
            if let next = upgrade.checkDeadline(now: now) { watch(until: next, context: context) }
        default:
            break
        }
    }

    func stopWatchdog() {
        watchdog.cancel()
        headerDeadline = nil
    }

    // MARK: Reads

    func read(context: ChannelHandlerContext) {
        if state.readWanted() { context.read() }
    }

    func resumeReading(_ context: ChannelHandlerContext) {
        if state.resumeReading() { context.read() }
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let event = event as? ChannelEvent, event == .inputClosed, state.inputClosed() {
            closeQuietly(context)
        }
        // Draining: an idle connection closes now; a busy one after its answer.
        if event is ChannelShouldQuiesceEvent, state.quiesce() {
            closeQuietly(context)
        }
        context.fireUserInboundEventTriggered(event)
    }

    /// Closes an idle connection once what was written is out.
    func closeQuietly(_ context: ChannelHandlerContext) {
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
        if case .proxying(let exchange) = state.phase { exchange.requestReadComplete() }
        context.fireChannelReadComplete()
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if case .proxying(let exchange) = state.phase { exchange.clientWritabilityChanged(context.channel.isWritable) }
        context.fireChannelWritabilityChanged()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        receive(unwrapInboundIn(data), vetted: nil, context: context)
    }

    /// A request part from NIO's decoder (through `channelRead`), or straight from the fast path
    /// in front of this handler with what it already learned of the head.
    func receive(_ part: HTTPServerRequestPart, vetted: SimpleRequestHead.Vetted?, context: ChannelHandlerContext) {
        perform(state.received(part), vetted: vetted, context: context)
    }

    /// Replays pipelined requests once the connection is free again.
    func drainQueued(_ context: ChannelHandlerContext) {
        while let action = state.nextQueued() { perform(action, vetted: nil, context: context) }
    }

    func perform(_ action: StateMachine.PartAction, vetted: SimpleRequestHead.Vetted?, context: ChannelHandlerContext) {
        switch action {
        case .decide(let head):
            headerDeadline = nil
            // An absolute-form target's authority is the request's host, not its Host field
            // (RFC 9112 §3.2.2): routing and the Host forwarded follow the same one.
            requestHost = RequestPath.authority(of: head.uri) ?? vetted.map { $0.host } ?? head.headers.first(name: "host")
            // After a head that offers an upgrade, NIO's decoder reads no further requests on
            // the connection, so one answered as plain HTTP (`h2c`, a refused WebSocket) ends it.
            requestKeepAlive = !state.quiescing && (vetted.map { $0.keepAlive && !$0.offersUpgrade } ?? (head.isKeepAlive && !UpgradeRequest.offersUpgrade(head)))
            request = RequestRecord(
                method: head.method.rawValue, uri: head.uri, client: nil,
                userAgent: services.accessLog.isEnabled ? head.headers.first(name: "user-agent") : nil, startedAt: .now()
            )
            let answer = answer(for: head, vetted: vetted, context: context)
            if case .proxy(let screened, let admissionRequest) = answer {
                startProxy(context: context, answer, screened, admissionRequest)
            } else {
                state.decided(answer)
            }
        case .body(let exchange, let buffer):
            exchange.requestBody(buffer)
        case .end(let exchange):
            exchange.requestEnd()
        case .perform(let answer):
            perform(answer, context: context)
        case .none:
            break
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        switch state.phase {
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
        case .upgrading, .authorizing, .proxying, .closed:
            context.close(promise: nil)
        }
    }

    // MARK: Decisions

    /// Decides the answer from the head alone (`Admission.screen`). A head the fast path
    /// `vetted` is not read again for what it learned (`handle` has set `requestHost` and
    /// `requestKeepAlive` from it).
    func answer(for head: HTTPRequestHead, vetted: SimpleRequestHead.Vetted?, context: ChannelHandlerContext) -> Answer {
        let keepAlive = requestKeepAlive
        let isHead = head.method == .HEAD
        let admissionRequest = Admission.Request(
            head: head, host: requestHost, framing: vetted?.framing ?? RequestFraming.read(head.headers),
            simple: vetted.map { !$0.offersUpgrade } ?? false
        )
        switch Admission.screen(admissionRequest, on: admissionFacts(context), routing: routing.refresh()) {
        case .success(let screened):
            request?.client = screened.client.address
            request?.route = screened.route.name
            switch screened.purpose {
            case .proxy: return .proxy(screened, admissionRequest)
            case .upgrade(let upgrade): return .upgrade(screened, upgrade, admissionRequest)
            case .demoPage: return .demoPage(head: isHead, keepAlive: keepAlive)
            }
        case .failure(let refusal):
            request?.client = refusal.client?.address
            request?.route = refusal.route?.name
            request?.rejection = refusal.error.rejection
            services.metrics.refused(refusal.error)
            if let route = refusal.upgradeRoute { services.metrics.upgradeFailed(route: route.name, refusal.error) }
            return .refuse(refusal.error, keepAlive: keepAlive && !refusal.error.closesConnection, head: isHead)
        }
    }

    /// The connection's facts admission reads, gathered once.
    func admissionFacts(_ context: ChannelHandlerContext) -> Admission.Connection {
        if let facts = admissionConnection { return facts }
        let facts = Admission.Connection(
            listener: configuration.listener, tls: configuration.tls, peer: configuration.peer,
            limits: configuration.limits
        )
        admissionConnection = facts
        return facts
    }

    /// Who asked, as the backend is told in the forwarding headers.
    func forwardingClient(_ client: Admission.Client) -> ForwardedHeaders.Client {
        if peerText == nil { peerText = .some(client.peer?.description) }
        return ForwardedHeaders.Client(
            address: peerText ?? nil, host: requestHost, tls: configuration.tls,
            trustsIncomingChain: client.peerIsTrustedProxy,
            keepsUnderscoreFields: configuration.limits.underscoreHeaders == .keep
        )
    }

    func perform(_ answer: Answer, context: ChannelHandlerContext) {
        switch answer {
        case .refuse(let error, let keepAlive, let isHead):
            respond(context: context, error, keepAlive: keepAlive, omitBody: isHead)
        case .demoPage(let isHead, let keepAlive):
            respond(context: context, DemoPage.answer, keepAlive: keepAlive, omitBody: isHead)
        case .proxy:
            break  // started at the head, so the body can stream
        case .upgrade(let screened, let upgrade, let admissionRequest):
            guard Admission.waits(screened, cluster: services.cluster) else {
                admit(context: context, screened, upgrade: upgrade, head: admissionRequest.head, identity: nil)
                return
            }
            authorize(context: context, answer, screened, admissionRequest)
        }
    }

    func refuseAfterWaiting(context: ChannelHandlerContext, _ error: SluiceError) {
        request?.rejection = error.rejection
        respond(context: context, error, keepAlive: false)
    }
}
