import Logging
import NIOCore
import NIOHTTP1
import SluiceConfig

/// What follows an admitted request: a plain request proxied to a backend, or an upgrade
/// handed to `WebSocketUpgrade` under the route's limits, and the switch to the relay.
extension HTTPGatewayHandler {
    func startProxy(
        context: ChannelHandlerContext, route: Route, head: HTTPRequestHead, path: RequestPath, identity: ClientIdentity, framing: RequestFraming
    ) {
        let target = route.upstreamTarget(for: path, upgrade: false)
        guard route.authenticator != nil else {
            // Public route: no closure to keep for an answer that is already known.
            beginExchange(context: context, route: route, head: head, target: target, identity: identity, framing: framing, user: nil)
            return
        }
        authorize(context: context, route: route, head: head, path: path, target: target, identity: identity) { [self] user in
            beginExchange(context: context, route: route, head: head, target: target, identity: identity, framing: framing, user: user)
        }
    }

    func beginExchange(
        context: ChannelHandlerContext, route: Route, head: HTTPRequestHead, target: String, identity: ClientIdentity,
        framing: RequestFraming, user: Identity?
    ) {
        guard let backends = route.backends else { return }
        request?.user = user?.user
        let client = forwardingClient(head, identity)
        let forwarding = forwardingBlock(for: client, context: context)
        let exchange = HTTPProxyExchange(
            route: route, backends: backends,
            request: .init(
                head: head, framing: framing, keepAlive: requestKeepAlive, target: target, client: client, forwarding: forwarding,
                clientIP: identity.address, identity: user
            ),
            client: context, clientBytes: responseBytesContext(context), downstream: self, pool: pool, services: services
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

    /// The forwarding fields and `Via` for `client`, rendered once per connection and `Host`;
    /// nil when a trusted proxy's chain makes them depend on each request.
    func forwardingBlock(for client: ForwardedHeaders.Client, context: ChannelHandlerContext) -> ByteBuffer? {
        guard !client.trustsIncomingChain else { return nil }
        if let cached = forwardingCache, cached.host == client.host { return cached.block }
        let block = HTTPWireFormat.forwardingBlock(client, allocator: context.channel.allocator)
        forwardingCache = (client.host, block)
        return block
    }

    /// Where already-framed response bytes are written: the context of this connection's HTTP
    /// encoder, so they pass beneath it (or this handler's, if the encoder is not in the pipeline).
    func responseBytesContext(_ context: ChannelHandlerContext) -> ChannelHandlerContext {
        if let encoderContext { return encoderContext }
        let found = (try? context.pipeline.syncOperations.context(handler: encoder)) ?? context
        encoderContext = found
        return found
    }

    // MARK: HTTPProxyDownstream (the exchange's view of this connection)

    func pauseClientReads(_ paused: Bool) {
        clientReadsPaused = paused
        if !paused, let context { resumeReading(context) }
    }

    func exchangeFailed(_ status: HTTPResponseStatus, _ message: String, result: String, keepAlive: Bool) {
        guard let context else { return }
        request?.rejection = result
        clientReadsPaused = false
        respond(context: context, status, body: message + "\n", contentType: "text/plain; charset=utf-8", keepAlive: keepAlive)
        if keepAlive { continueAfterAnswer(context) }
    }

    func exchangeFinished(status: HTTPResponseStatus, bytes: Int, reusable: Bool, written: EventLoopFuture<Void>?) {
        guard let context else { return }
        logRequest(status: status, bytes: bytes)
        clientReadsPaused = false
        if reusable && !quiescing {
            state = .idle
            armHeaderTimer(context: context)
            continueAfterAnswer(context)
        } else {
            state = .done
            closeAfterWrites(context, written)
        }
    }

    func exchangeAborted() {
        state = .done
        context?.close(promise: nil)
    }

    func watch(until deadline: NIODeadline) {
        if let context { watch(until: deadline, context: context) }
    }

    /// The connection is free again: pipelined requests go next, then reading resumes — or, if
    /// the client half-closed, the connection closes once all is answered.
    func continueAfterAnswer(_ context: ChannelHandlerContext) {
        drainQueued(context)
        if case .proxying(let next) = state { next.requestReadComplete() }
        if case .idle = state { resumeReading(context) }
        closeIfClientDone(context)
    }

    /// The route's limits, then the backend.
    func admit(
        context: ChannelHandlerContext, route: Route, head: HTTPRequestHead, upgrade: UpgradeRequest, path: RequestPath, target: String,
        identity: ClientIdentity, user: Identity?
    ) {
        request?.user = user?.user
        do {
            switch route.limiter.admit(ip: identity.address ?? Self.unknownAddress, user: user?.user) {
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
        startUpgrade(context: context, route: route, head: head, request: upgrade, path: path, target: target, identity: identity, user: user)
    }

    func refuse(context: ChannelHandlerContext, route: Route, _ refusal: AuthRefusal) {
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

    func startUpgrade(
        context: ChannelHandlerContext, route: Route, head: HTTPRequestHead, request upgradeRequest: UpgradeRequest,
        path: RequestPath, target: String, identity: ClientIdentity, user: Identity?
    ) {
        let client = forwardingClient(head, identity)
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
                // The answer said `Connection: close`: the connection ends once it is out,
                // whatever the backend does with its own (a keep-alive server keeps it).
                closeAfterWrites(context, nil)
            }
        }
        state = .upgrading(upgrade)
        upgrade.start()
    }

    /// Writes the 101 and leaves the pipeline to the relay; bytes the decoder still holds go to
    /// the relay handler, in order.
    func switchToRelay(context: ChannelHandlerContext, head: HTTPResponseHead, relayHandler: RelayHandler) -> EventLoopFuture<Void> {
        state = .done
        // The relay treats the client's EOF as its end, as it always has.
        context.channel.setOption(.allowRemoteHalfClosure, value: false).whenFailure { _ in }
        if clientInputClosed {
            context.close(promise: nil)
            return context.eventLoop.makeFailedFuture(ChannelError.inputClosed)
        }
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
}
