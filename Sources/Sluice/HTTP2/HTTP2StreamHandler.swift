import Logging
import NIOCore
import NIOHTTP1
import NIOHTTP2
import SluiceConfig

/// Serves the one request of one HTTP/2 stream, by the same admission, backends and relay as
/// HTTP/1: a plain request is proxied to the route's HTTP/1.1 backends with both bodies
/// streaming (the stream's flow-control window is the backpressure: a client that reads slowly
/// stops Sluice reading the backend, a backend that reads slowly stops the client's window);
/// an extended CONNECT with `:protocol websocket` (RFC 8441) becomes an RFC 6455 upgrade to
/// the backend and, on its 101, a 200 and the frame-aware relay over the stream's DATA frames.
///
/// The phases are `HTTPConnectionStateMachine`'s, with one request and no keep-alive: the stream
/// ends with its answer.
///
/// It serves a stream of either HTTP/2 layer (`Sink`): in a NIOHTTP2 stream channel's pipeline
/// (behind `HTTP2RequestCodec`, its sink the channel's context), or driven by a stream of Sluice's
/// own layer (`HTTP2WireStream`, which has no channel) through `requestPart`, `streamClosed` and
/// the other entry points below.
final class HTTP2StreamHandler<Sink: HTTP2StreamSink>: ChannelDuplexHandler, RemovableChannelHandler, HTTPProxyDownstream, HTTP2StreamWatchdog.Watched,
    AdmissionWaiting
{
    typealias InboundIn = HTTP2RequestPart
    typealias OutboundIn = HTTPServerResponsePart
    typealias OutboundOut = HTTPServerResponsePart
    typealias StateMachine = HTTPConnectionStateMachine<RequestAnswer, HTTPProxyExchange, WebSocketUpgrade>

    private let connection: HTTP2Connection
    var services: GatewayServices { connection.services }
    var state = StateMachine()
    private var request: RequestRecord?
    private var requestHead: HTTP2RequestHead?
    /// The client ended its side of the stream.
    private var requestEnded = false
    /// Where the answer goes, while the stream lives.
    private(set) var context: Sink?
    /// Kept by the connection's `HTTP2StreamWatchdog`.
    var watchDeadline: NIODeadline?
    var watchIndex = 0

    init(connection: HTTP2Connection) {
        self.connection = connection
    }

    /// A stream of Sluice's own HTTP/2 layer: served with no pipeline.
    init(connection: HTTP2Connection, sink: Sink) {
        self.connection = connection
        context = sink
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = Sink.inPipeline(context)
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        stopWatchdog()
        self.context = nil
    }

    func channelInactive(context: ChannelHandlerContext) {
        streamClosed()
        context.fireChannelInactive()
    }

    /// The stream is gone (the client reset it, or the connection closed).
    func streamClosed() {
        stopWatchdog()
        switch state.close() {
        case .upgrading(let upgrade): upgrade.cancel()
        case .proxying(let exchange): exchange.cancel()
        default: break
        }
        if let request = request.take() {
            // The client reset the stream before its answer.
            request.write(to: services.accessLog, listener: connection.configuration.listener, status: HTTPResponseStatus(statusCode: 499), bytes: 0)
        }
        context = nil
    }

    func read(context: ChannelHandlerContext) {
        if state.readWanted() { context.read() }
    }

    /// The request's body may be read now (not while a backend cannot take more).
    var readsRequest: Bool { state.readWanted() }

    func channelReadComplete(context: ChannelHandlerContext) {
        requestReadComplete()
        context.fireChannelReadComplete()
    }

    /// A read of the client ended: what it brought goes to the backend in one write.
    func requestReadComplete() {
        if case .proxying(let exchange) = state.phase { exchange.requestReadComplete() }
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        clientWritabilityChanged(context.channel.isWritable)
        context.fireChannelWritabilityChanged()
    }

    func clientWritabilityChanged(_ writable: Bool) {
        if case .proxying(let exchange) = state.phase { exchange.clientWritabilityChanged(writable) }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }

    // MARK: The request

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        requestPart(unwrapInboundIn(data))
    }

    func requestPart(_ request: consuming HTTP2RequestPart) {
        guard let context else { return }
        let part: HTTPServerRequestPart
        switch consume request {
        case .head(let head):
            // Known now, so an answer given at the head does not reset a finished request.
            requestEnded = head.endStream
            part = .head(head.head)
            requestHead = head
        case .body(let buffer):
            part = .body(buffer)
        case .end:
            requestEnded = true
            part = .end(nil)
        }
        received(part, context: context)
        // A head that ends the stream is the request's end as well (no `.end` part comes).
        if case .head = part, requestEnded { received(.end(nil), context: context) }
    }

    private func received(_ part: HTTPServerRequestPart, context: Sink) {
        switch state.received(part) {
        case .decide:
            if let head = requestHead { decide(head, context: context) }
        case .body(let exchange, let buffer):
            exchange.requestBody(buffer)
        case .end(let exchange):
            exchange.requestEnd()
        case .perform, .none:
            break
        }
    }

    /// Admission, then the answer at once: an HTTP/2 request does not need its body read
    /// before it is refused (the stream is reset after the answer instead).
    private func decide(_ head: HTTP2RequestHead, context: Sink) {
        request = record(of: head)
        let isHead = head.head.method == .HEAD
        if let problem = head.problem {
            request?.rejection = SluiceError.Label.badRequest.rawValue
            respond(context: context, .client(.badRequest, .badRequest, problem), omitBody: isHead)
            return
        }
        let admissionRequest = Admission.Request(head: head.head, host: head.host, framing: head.framing, extendedConnect: head.extendedConnect)
        switch Admission.screen(admissionRequest, on: connection.admission, routing: connection.currentRouting()) {
        case .failure(let refusal):
            request?.client = refusal.client?.address
            request?.route = refusal.route?.name
            request?.rejection = refusal.error.rejection
            services.metrics.refused(refusal.error)
            if let route = refusal.upgradeRoute { services.metrics.upgradeFailed(route: route.name, refusal.error) }
            respond(context: context, refusal.error, omitBody: isHead)
        case .success(let screened):
            request?.client = screened.client.address
            request?.route = screened.route.name
            switch screened.purpose {
            case .demoPage:
                respond(context: context, DemoPage.answer, omitBody: isHead)
            case .proxy:
                guard Admission.waits(screened, cluster: services.cluster) else {
                    beginExchange(context: context, screened, admissionRequest, identity: nil)
                    return
                }
                authorize(context: context, .proxy(screened, admissionRequest), screened, admissionRequest)
            case .upgrade(let upgrade):
                guard Admission.waits(screened, cluster: services.cluster) else {
                    admit(context: context, screened, upgrade: upgrade, head: head.head, identity: nil)
                    return
                }
                authorize(context: context, .upgrade(screened, upgrade, admissionRequest), screened, admissionRequest)
            }
        }
    }

    private func record(of head: HTTP2RequestHead) -> RequestRecord {
        RequestRecord(
            method: head.head.method.rawValue, uri: head.head.uri, client: connection.admission.peer,
            userAgent: services.accessLog.isEnabled ? head.head.headers.first(name: "user-agent") : nil,
            startedAt: context?.wireStream?.openedAt ?? .now(), version: "HTTP/2"
        )
    }

    /// Sluice's own layer found the request malformed and resets its stream (RFC 9113 §8.1.1:
    /// DATA that contradicts the request's `Content-Length`): it is logged and counted as a
    /// 400, as a malformed request Sluice answers is, unless its answer was already logged.
    /// `head` is the request's head when it never reached this handler. (NIOHTTP2 resets such a
    /// stream as it would for a client's reset: logged as 499, or not at all before the head.)
    func refusedMalformed(_ head: HTTP2RequestHead?) {
        if requestHead == nil, let head { request = record(of: head) }
        guard request != nil else { return }
        request?.rejection = SluiceError.Label.badRequest.rawValue
        log(status: .badRequest, bytes: 0)
    }

    func admissionFacts(_ context: Sink) -> Admission.Connection {
        connection.admission
    }

    func refuseAfterWaiting(context: Sink, _ error: SluiceError) {
        request?.rejection = error.rejection
        respond(context: context, error)
    }

    private func forwardingClient(_ client: Admission.Client, host: String?) -> ForwardedHeaders.Client {
        ForwardedHeaders.Client(
            address: connection.peerText, host: host, tls: connection.configuration.tls, trustsIncomingChain: client.peerIsTrustedProxy,
            keepsUnderscoreFields: connection.configuration.limits.underscoreHeaders == .keep
        )
    }

    // MARK: Proxying

    func beginExchange(context: Sink, _ screened: Admission.Screened, _ admissionRequest: Admission.Request, identity: Identity?) {
        let route = screened.route
        guard let backends = route.backends else { return }
        request?.user = identity?.user
        let client = forwardingClient(screened.client, host: admissionRequest.host)
        let forwarding = connection.forwardingFields.block(for: client, allocator: context.responseAllocator)
        // The loop's clock, read once for the exchange's start (the pool, the deadlines).
        let now = context.eventLoop.now
        let exchange = HTTPProxyExchange(
            route: route, backends: backends,
            request: .init(
                head: admissionRequest.head, framing: admissionRequest.framing, keepAlive: true, target: screened.target,
                client: client, forwarding: forwarding,
                clientIP: screened.client.address, identity: identity
            ),
            client: context, response: .parts(context), downstream: self, pool: services.pool, services: services
        )
        let held = state.proxying(exchange)
        exchange.start(now: now)
        for part in held {
            switch part {
            case .body(let buffer): exchange.requestBody(buffer)
            case .end: exchange.requestEnd(now: now)
            case .head: break
            }
        }
        if !held.isEmpty { exchange.requestReadComplete() }
        // Reads held while admission waited go on.
        if state.resumeReading() { context.readRequest() }
    }

    func pauseClientReads(_ paused: Bool) {
        if state.backendFull(paused) { context?.readRequest() }
    }

    func exchangeFailed(_ error: SluiceError, keepAlive: Bool) {
        guard let context else { return }
        request?.rejection = error.rejection
        respond(context: context, error)
    }

    func exchangeFinished(status: HTTPResponseStatus, bytes: Int, reusable: Bool, written: EventLoopFuture<Void>?) {
        stopWatchdog()
        log(status: status, bytes: bytes)
        _ = state.answered(keepAlive: false)
        finishStream(after: written)
    }

    /// A stream whose client is still sending is reset once its answer's end is out.
    var waitsForResponseEnd: Bool { !requestEnded }

    func exchangeAborted() {
        _ = state.close()
        context?.endStream()
    }

    func watch(until deadline: NIODeadline) {
        guard context != nil else { return }
        connection.watchdog.watch(self, until: deadline)
    }

    func watchdogFired(now: NIODeadline) -> NIODeadline? {
        guard context != nil else { return nil }
        switch state.phase {
        case .proxying(let exchange): return exchange.checkDeadlines(now: now)
        case .upgrading(let upgrade): return upgrade.checkDeadline(now: now)
        default: return nil
        }
    }

    private func stopWatchdog() {
        connection.watchdog.unwatch(self)
    }

    // MARK: WebSockets (RFC 8441)

    func admit(
        context sink: Sink, _ screened: Admission.Screened, upgrade: UpgradeRequest, head: HTTPRequestHead, identity: Identity?,
        leases: Admission.Leases? = nil
    ) {
        request?.user = identity?.user
        let held: Admission.Leases
        switch Admission.leases(screened, identity: identity, granted: leases) {
        case .success(let value): held = value
        case .failure(let error):
            services.metrics.upgradeFailed(route: screened.route.name, error)
            services.metrics.refused(error)
            request?.rejection = error.rejection
            respond(context: sink, error)
            return
        }
        // The stream ends exactly once, on every path (relay end, refusal, reset, timeout).
        sink.whenClosed { held.release() }
        let host = requestHead?.host
        let downstream = WebSocketUpgrade.Downstream(
            client: sink,
            respond: { [self] error in
                request?.rejection = error.rejection
                respond(context: sink, error)
            },
            switchToRelay: { [self] answer, relay in switchToRelay(sink, answer: answer, relay: relay) },
            watch: { [self] deadline in watch(until: deadline) }
        )
        var origin = WebSocketUpgrade.Origin(
            listener: connection.configuration.listener, screened: screened, forwarding: forwardingClient(screened.client, host: host),
            path: request?.path, identity: identity, clientProtocol: "h2"
        )
        origin.connectionID = held.connectionID
        if let startedAt = request?.startedAt { origin.startedAt = startedAt }
        let upgrade = WebSocketUpgrade(
            downstream: downstream, route: screened.route, clientHead: head, upgrade: upgrade, requestTarget: screened.target,
            origin: origin, services: services
        ) { [self] outcome in
            switch outcome {
            case .relaying:
                request = nil
            case .responded(let status):
                // The backend's own answer was streamed to the client, and ended the stream.
                if let status { log(status: status, bytes: 0) }
                _ = state.close()
                finishStream(after: nil)
            }
        }
        state.upgrading(upgrade)
        upgrade.start()
    }

    /// The backend accepted: the client gets a 200 (RFC 8441 §5) with the backend's
    /// subprotocol and extensions, and the stream goes to the relay: a stream of Sluice's own
    /// layer carries it itself, a NIOHTTP2 stream channel through `HTTP2TunnelCodec` and a
    /// `RelayHandler` in place of the request's handlers.
    private func switchToRelay(_ sink: Sink, answer: SwitchingAnswer, relay: WebSocketRelay) -> EventLoopFuture<Void> {
        // DATA the client sent before the 200 (RFC 6455 asks it to wait; not every client does)
        // goes to the relay first, as bytes after an HTTP/1 upgrade request do.
        let early = state.relaying()
        let head = HTTPResponseHead(version: .http2, status: .ok, headers: answer.http2Fields)
        if let stream = sink.wireStream {
            stream.writeResponse(.head(head), promise: nil)
            stream.carry(relay, early: early)
            return stream.eventLoop.makeSucceededVoidFuture()
        }
        guard let context = sink.pipelineContext else {
            sink.closeClient()
            return sink.eventLoop.makeFailedFuture(ChannelError.inappropriateOperationForState)
        }
        context.writeAndFlush(wrapOutboundOut(.head(head)), promise: nil)
        let pipeline = context.pipeline.syncOperations
        do {
            let codec = try pipeline.handler(type: HTTP2RequestCodec.self)
            try pipeline.addHandler(HTTP2TunnelCodec(clientEnded: codec.clientFinished), position: .after(codec))
            try pipeline.addHandler(RelayHandler(relay: relay, side: .downstream, isSocket: false))
            // (NIOHTTP2 keeps DATA in the stream channel while reads are held, so `early` is
            // empty unless a read delivered the DATA with the HEADERS.)
            for buffer in early { context.fireChannelRead(NIOAny(buffer)) }
            if !early.isEmpty { context.fireChannelReadComplete() }
            _ = pipeline.removeHandler(codec)
            _ = pipeline.removeHandler(context: context)
        } catch {
            context.close(promise: nil)
            return context.eventLoop.makeFailedFuture(error)
        }
        context.channel.read()
        return context.eventLoop.makeSucceededVoidFuture()
    }

    // MARK: Answers

    private func log(status: HTTPResponseStatus, bytes: Int) {
        connection.countRequest(route: request?.route, status: status.code)
        guard let request = request.take() else { return }
        request.write(to: services.accessLog, listener: connection.configuration.listener, status: status, bytes: bytes)
    }

    private func respond(context: Sink, _ error: SluiceError, omitBody: Bool = false) {
        respond(context: context, GatewayAnswer(error), omitBody: omitBody)
    }

    /// A complete answer written by Sluice; the stream ends with it.
    private func respond(context: Sink, _ answer: GatewayAnswer, omitBody: Bool = false) {
        stopWatchdog()
        _ = state.answered(keepAlive: false)
        log(status: answer.status, bytes: answer.sentBytes(omitBody: omitBody))
        finishStream(after: answer.write(to: context, version: .http2, closing: false, omitBody: omitBody))
    }

    /// The answer is ending the stream: if the client is still sending (a refused upload), the
    /// stream is reset once the answer is out (`written`), so it stops; otherwise it closes
    /// on its own.
    private func finishStream(after written: EventLoopFuture<Void>?) {
        guard !requestEnded, let context else { return }
        guard let written else {
            context.endStream()
            return
        }
        written.assumeIsolated().whenComplete { _ in context.endStream() }
    }
}
