import Logging
import NIOCore
import NIOHTTP1
import SluiceConfig

/// What follows an admitted request: a plain request proxied to a backend, or an upgrade
/// handed to `WebSocketUpgrade` under the route's limits, and the switch to the relay.
extension HTTPGatewayHandler {
    /// A plain request's head was admitted: proxy it now (public route) or once authenticated.
    func startProxy(context: ChannelHandlerContext, _ answer: Answer, _ screened: Admission.Screened, _ admissionRequest: Admission.Request) {
        guard Admission.waits(screened, cluster: services.cluster) else {
            beginExchange(context: context, screened, admissionRequest, identity: nil)
            return
        }
        authorize(context: context, answer, screened, admissionRequest)
    }

    func beginExchange(context: ChannelHandlerContext, _ screened: Admission.Screened, _ admissionRequest: Admission.Request, identity: Identity?) {
        let route = screened.route
        guard let backends = route.backends else { return }
        request?.user = identity?.user
        let client = forwardingClient(screened.client)
        let forwarding = forwardingFields.block(for: client, allocator: context.channel.allocator)
        // The loop's clock, read once for the exchange's start (the pool, the deadlines).
        let now = context.eventLoop.now
        let exchange = HTTPProxyExchange(
            route: route, backends: backends,
            request: .init(
                head: admissionRequest.head, framing: admissionRequest.framing, keepAlive: requestKeepAlive, target: screened.target,
                client: client, forwarding: forwarding, clientIP: screened.client.address, identity: identity
            ),
            client: context, response: .http1(responseBytesContext(context)), downstream: self, pool: pool, services: services
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
        if state.backendFull(paused) { context?.read() }
    }

    func exchangeFailed(_ error: SluiceError, keepAlive: Bool) {
        guard let context else { return }
        request?.rejection = error.rejection
        respond(context: context, error, keepAlive: keepAlive)
        if keepAlive { continueAfterAnswer(context) }
    }

    func exchangeFinished(status: HTTPResponseStatus, bytes: Int, reusable: Bool, written: EventLoopFuture<Void>?) {
        guard let context else { return }
        logRequest(status: status, bytes: bytes)
        if state.answered(keepAlive: reusable) {
            armHeaderTimer(context: context)
            continueAfterAnswer(context)
        } else {
            closeAfterWrites(context, written)
        }
    }

    func exchangeAborted() {
        _ = state.close()
        context?.close(promise: nil)
    }

    func watch(until deadline: NIODeadline) {
        if let context { watch(until: deadline, context: context) }
    }

    /// The connection is free again: pipelined requests go next, then reading resumes — or, if
    /// the client half-closed, the connection closes once all is answered.
    func continueAfterAnswer(_ context: ChannelHandlerContext) {
        drainQueued(context)
        switch state.phase {
        case .proxying(let next): next.requestReadComplete()
        case .idle: resumeReading(context)
        default: break
        }
        if state.closeIfClientDone() { closeQuietly(context) }
    }

    /// The route's caps (taken here, or already by `Admission.decide`), then the backend.
    func admit(context: ChannelHandlerContext, _ screened: Admission.Screened, upgrade: UpgradeRequest, head: HTTPRequestHead, identity: Identity?, leases: Admission.Leases? = nil) {
        request?.user = identity?.user
        let held: Admission.Leases
        switch Admission.leases(screened, identity: identity, granted: leases) {
        case .success(let value): held = value
        case .failure(let error):
            refuseUpgrade(context: context, screened, error)
            return
        }
        // The client channel closes exactly once, on every path (relay end, refusal, error,
        // timeout), so its close is where the counts are given back.
        context.channel.closeFuture.whenComplete { _ in held.release() }
        startUpgrade(context: context, screened, upgrade: upgrade, head: head, identity: identity, connectionID: held.connectionID)
    }

    /// An upgrade a limit refused: counted, logged and answered; the connection closes.
    func refuseUpgrade(context: ChannelHandlerContext, _ screened: Admission.Screened, _ error: SluiceError) {
        services.metrics.upgradeFailed(route: screened.route.name, error)
        services.metrics.refused(error)
        request?.rejection = error.rejection
        respond(context: context, error, keepAlive: false)
    }

    func startUpgrade(
        context: ChannelHandlerContext, _ screened: Admission.Screened, upgrade upgradeRequest: UpgradeRequest, head: HTTPRequestHead, identity: Identity?,
        connectionID: UInt64?
    ) {
        let downstream = WebSocketUpgrade.Downstream(
            client: context,
            respond: { [self] error in
                request?.rejection = error.rejection
                respond(context: context, error, keepAlive: false)
            },
            switchToRelay: { [self] answer, relay in
                switchToRelay(context: context, answer: answer, relayHandler: RelayHandler(relay: relay, side: .downstream))
            },
            watch: { [self] deadline in watch(until: deadline, context: context) }
        )
        var origin = WebSocketUpgrade.Origin(
            listener: configuration.listener, screened: screened, forwarding: forwardingClient(screened.client), path: request?.path,
            identity: identity, clientProtocol: "h1"
        )
        origin.connectionID = connectionID
        if let startedAt = request?.startedAt { origin.startedAt = startedAt }
        let upgrade = WebSocketUpgrade(
            downstream: downstream, route: screened.route, clientHead: head, upgrade: upgradeRequest, requestTarget: screened.target,
            origin: origin, services: services
        ) { [self] outcome in
            switch outcome {
            case .relaying:
                request = nil
            case .responded(let status):
                if let status { logRequest(status: status, bytes: 0) }
                _ = state.close()
                // The answer said `Connection: close`: the connection ends once it is out,
                // whatever the backend does with its own (a keep-alive server keeps it).
                closeAfterWrites(context, nil)
            }
        }
        state.upgrading(upgrade)
        upgrade.start()
    }

    /// Writes the 101 and leaves the pipeline to the relay; bytes the client sent behind its
    /// head (kept by the fast path, or by NIO's decoder) go to the relay handler, in order.
    func switchToRelay(context: ChannelHandlerContext, answer: SwitchingAnswer, relayHandler: RelayHandler) -> EventLoopFuture<Void> {
        _ = state.close()
        // The relay treats the client's EOF as its end, as it always has.
        try? context.channel.syncOptions?.setOption(.allowRemoteHalfClosure, value: false)
        if state.clientHalfClosed {
            context.close(promise: nil)
            return context.eventLoop.makeFailedFuture(ChannelError.inputClosed)
        }
        // Whoever read the upgrade head holds what the client sent behind it.
        let fastPath = upgradeBytes
        guard fastPath != nil || decoder != nil else {
            context.close(promise: nil)
            return context.eventLoop.makeFailedFuture(ChannelError.inappropriateOperationForState)
        }
        // Bytes beneath the encoder, which leaves with this handler.
        responseBytesContext(context).writeAndFlush(NIOAny(answer.http1Bytes(allocator: context.channel.allocator)), promise: nil)
        let pipeline = context.pipeline.syncOperations
        do {
            try pipeline.addHandler(relayHandler)
        } catch {
            context.close(promise: nil)
            return context.eventLoop.makeFailedFuture(error)
        }
        let channel = context.channel
        pipeline.removeHandler(context: context, promise: nil)
        pipeline.removeHandler(encoder, promise: nil)
        let bytesHandedOver: EventLoopFuture<Void>
        if let decoder = fastPath == nil ? decoder : nil {
            bytesHandedOver = pipeline.removeHandler(decoder)
        } else {
            fastPath?.handOverToRelay()
            bytesHandedOver = channel.eventLoop.makeSucceededVoidFuture()
        }
        channel.read()
        return bytesHandedOver
    }
}
