import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL
import SluiceConfig

/// Carries one validated client upgrade to a backend and, on its 101, starts the relay.
///
/// Connects on the client channel's event loop (so the relay needs no locks), retries the next
/// backend when a connect fails, and maps failures to the status the client gets: refused or
/// unreachable → 502, connect or handshake timeout → 504, an invalid 101 → 502. Any other
/// answer from the backend is streamed to the client as it came.
final class WebSocketUpgrade {
    /// How the exchange with the client ended.
    enum Outcome {
        /// The relay runs; the HTTP handlers are gone from the client channel.
        case relaying
        /// An HTTP response was sent; the client connection closes after it. The status is set
        /// when the backend's own answer was streamed (the handler did not write it).
        case responded(HTTPResponseStatus?)
    }

    /// Where the upgrade came from, for the registry and the access log.
    struct Origin {
        var listener: String
        var client: ForwardedHeaders.Client
        /// The client address after `trusted_proxies`.
        var clientAddress: String
        /// The request path without its query.
        var path: String
        /// Who the route's authentication admitted; `nil` on public routes.
        var identity: Identity?
        /// The client address after `trusted_proxies`, for sticky hashing.
        var clientIP: IPAddress?
        /// `h1` or `h2` (RFC 8441).
        var clientProtocol = "h1"
        /// The registry id admission already gave it (in the cluster view); else one is made.
        var connectionID: UInt64?
        /// When the client's request head was read: the start of the handshake it sees.
        var startedAt = NIODeadline.now()

        /// An upgrade admission screened: `path` is the logged request path (the target as sent,
        /// without its query).
        init(listener: String, screened: Admission.Screened, forwarding: ForwardedHeaders.Client, path: String?, identity: Identity?, clientProtocol: String) {
            self.listener = listener
            client = forwarding
            clientAddress = screened.client.address?.description ?? "unknown"
            self.path = path ?? screened.path.path
            self.identity = identity
            clientIP = screened.client.address
            self.clientProtocol = clientProtocol
        }
    }

    /// What the client side must do for the upgrade; implemented by the HTTP handler.
    struct Downstream {
        /// Where a backend's refusal is streamed to (its own answer, not Sluice's).
        var client: any ResponseSink
        /// Writes the error's short response and closes.
        var respond: (SluiceError) -> Void
        /// Writes the answer and hands the client's side to `relay` (the client channel's HTTP
        /// handlers replaced with a `RelayHandler`, or a stream of Sluice's own HTTP/2 layer
        /// switched to its tunnel); the future completes when what read the request (the fast
        /// path or NIO's decoder) has left the pipeline and given the relay the bytes it kept.
        var switchToRelay: (SwitchingAnswer, WebSocketRelay) -> EventLoopFuture<Void>
        /// Makes sure the client connection's one timer fires by the deadline and then asks
        /// `checkDeadline(now:)`: the handshake keeps no timer of its own (scheduling and
        /// cancelling one per upgrade was a task on NIO's heap, whose cancel searches it all).
        var watch: (NIODeadline) -> Void
    }

    private let downstream: Downstream
    private let route: Route
    private let clientHead: HTTPRequestHead
    private let upgrade: UpgradeRequest
    /// The accept for the client's key: checked in the backend's 101 (it was sent the same
    /// key) and written in the client's.
    private let expectedAccept: String
    private let requestTarget: String
    private let origin: Origin
    private let services: GatewayServices
    private var logger: Logger { services.logger }
    private let completion: (Outcome) -> Void
    private var currentBackend: Backend?
    private var handshakeStartedAt = NIODeadline.now()

    private var attempts: BackendAttempts?
    /// The backend whose connection answers the handshake.
    private var currentIndex: Int?
    private var upstream: (any Channel)?
    private var handshakeHandler: UpstreamHandshakeHandler?
    /// When the backend must have answered the handshake (on the client connection's timer).
    private var handshakeDeadline: NIODeadline?
    private var backendHead: UpstreamResponseParser.Head?
    private var validated: UpgradeResponse?
    private var streamingResponse = false
    private var finished = false
    private var connectStartedAt = NIODeadline.now()

    init(
        downstream: Downstream, route: Route, clientHead: HTTPRequestHead, upgrade: UpgradeRequest,
        requestTarget: String, origin: Origin, services: GatewayServices, completion: @escaping (Outcome) -> Void
    ) {
        self.downstream = downstream
        self.route = route
        self.clientHead = clientHead
        self.upgrade = upgrade
        expectedAccept = upgrade.expectedAccept
        self.requestTarget = requestTarget
        self.origin = origin
        self.services = services
        self.completion = completion
    }

    private var eventLoop: any EventLoop { downstream.client.eventLoop }

    func start() {
        guard let backends = route.backends else {
            fail(SluiceError(source: .gateway, status: .internalServerError, label: .noBackend, message: "route has no backends"))
            return
        }
        attempts = BackendAttempts(
            backends, attempts: route.websocket.maxConnectAttempts, client: origin.clientIP, headers: clientHead.headers, user: origin.identity?.user
        )
        connectNext()
    }

    /// The client went away while the upgrade was in flight.
    func cancel() {
        guard !finished else { return }
        finished = true
        handshakeDeadline = nil
        handshakeHandler?.detach()
        upstream?.close(promise: nil)
    }

    // MARK: Connect

    private func connectNext() {
        guard !finished, var attempts else { return }
        guard let (index, backend) = attempts.nextBackend() else {
            fail(attempts.exhausted)
            return
        }
        self.attempts = attempts
        connectStartedAt = .now()
        let request = upstreamRequest(for: backend)
        let handler = UpstreamHandshakeHandler(request: request) { [self] event in
            handshakeEvent(event)
        }
        backend.connectBytes(on: eventLoop, timeout: TimeAmount(route.websocket.connectTimeout), handler: handler).assumeIsolated().whenComplete { [self] result in
            switch result {
            case .success(let channel):
                if finished {
                    channel.close(promise: nil)
                    return
                }
                upstream = channel
                handshakeHandler = handler
                currentBackend = backend
                currentIndex = index
                handshakeStartedAt = .now()
                route.metrics?.connectTime.recordNanoseconds((handshakeStartedAt - connectStartedAt).nanoseconds)
                let deadline = eventLoop.now + TimeAmount(route.websocket.handshakeTimeout)
                handshakeDeadline = deadline
                downstream.watch(deadline)
            case .failure(let error):
                logger.debug("backend connect failed", metadata: ["backend": "\(backend.url)", "error": "\(error)"])
                self.attempts?.failed(error)
                connectNext()
            }
        }
    }

    /// The client's fields an upgrade writes itself (lower-case).
    private static let ownFields = FieldNameSet(["sec-websocket-key", "sec-websocket-version", "sec-websocket-protocol", "sec-websocket-extensions", "sec-websocket-accept"])

    /// The upgrade request the backend receives, as bytes: the client's end-to-end headers, the
    /// validated WebSocket fields, and forwarding headers.
    private func upstreamRequest(for backend: Backend) -> ByteBuffer {
        var head = downstream.client.responseAllocator.buffer(capacity: 512)
        head.writeRequestLine(.GET, backend.target(for: requestTarget))
        UpstreamHead.forEachField(
            route: route, headers: clientHead.headers, client: origin.client, identity: origin.identity, backend: backend,
            dropping: Self.ownFields
        ) { head.writeField($0, $1) }
        head.writeStaticString("Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: ")
        head.writeString(upgrade.key)
        head.writeStaticString("\r\nSec-WebSocket-Version: 13\r\n")
        if !upgrade.protocols.isEmpty {
            head.writeStaticString("Sec-WebSocket-Protocol: ")
            for (index, name) in upgrade.protocols.enumerated() {
                if index > 0 { head.writeStaticString(", ") }
                head.writeString(name)
            }
            head.writeStaticString("\r\n")
        }
        for value in upgrade.extensions { head.writeField("Sec-WebSocket-Extensions", value) }
        HTTPWireFormat.writeForwarding(origin.client, chains: ForwardedHeaders.incomingChains(clientHead.headers, client: origin.client), into: &head)
        head.writeStaticString("\r\n")
        return head
    }

    // MARK: Handshake

    /// The client connection's timer fired: a handshake past its deadline is ended (or retried);
    /// otherwise the deadline still to watch for, if any.
    func checkDeadline(now: NIODeadline) -> NIODeadline? {
        guard !finished, let deadline = handshakeDeadline else { return nil }
        guard deadline <= now else { return deadline }
        handshakeDeadline = nil
        handshakeTimedOut()
        // A retry whose connect completed at once (an embedded dialer) has a deadline already.
        return handshakeDeadline
    }

    private func handshakeTimedOut() {
        guard !finished, !streamingResponse else { return }
        if retried(after: "backend did not answer the WebSocket handshake in time", label: "timeout") { return }
        fail(.backend(.gatewayTimeout, .backendTimeout, "backend did not answer the WebSocket handshake in time"))
    }

    /// The current backend failed the handshake before anything reached the client: it counts
    /// against the backend's health, and the next backend is tried if one is left within the
    /// retry budget. Returns whether it is.
    private func retried(after reason: String, label: String) -> Bool {
        attempts?.failedAnswer(reason)
        handshakeDeadline = nil
        handshakeHandler?.detach()
        upstream?.close(promise: nil)
        guard attempts?.mayRetry(reason: label) == true else { return false }
        logger.info("websocket upgrade retried on the next backend", metadata: [
            "route": "\(route.name)", "backend": "\(currentBackend.map { "\($0.url)" } ?? "")", "reason": "\(reason)",
        ])
        upstream = nil
        handshakeHandler = nil
        currentBackend = nil
        currentIndex = nil
        backendHead = nil
        validated = nil
        connectNext()
        return true
    }

    private func handshakeEvent(_ event: UpstreamHandshakeHandler.Event) {
        guard !finished else { return }
        switch event {
        case .head(let raw):
            backendHead = raw
            if raw.status == 101 {
                do {
                    validated = try UpgradeResponse.validate(raw, for: upgrade, expectedAccept: expectedAccept)
                } catch {
                    if retried(after: error.message, label: "invalid_101") { return }
                    fail(.backend(.badGateway, .backendError, error.message))
                }
            } else {
                let head = raw.responseHead
                let status = Int(head.status.code)
                if origin.clientProtocol == "h2" && (200..<300).contains(status) {
                    // Over HTTP/2 a 2xx answer to an extended CONNECT opens the WebSocket (RFC
                    // 8441 §5): a backend that answered the upgrade with one did not upgrade,
                    // and its answer must not reach the client as if it had.
                    let reason = "status \(status) to the upgrade, not 101"
                    if retried(after: reason, label: "invalid_101") { return }
                    fail(.backend(.badGateway, .backendError, "backend answered the upgrade with \(status), not 101"))
                    return
                }
                if status >= 500 {
                    let reason = "status \(status) to the upgrade"
                    if [502, 503, 504].contains(status) {
                        if retried(after: reason, label: String(status)) { return }
                    } else {
                        attempts?.failedAnswer(reason)
                    }
                } else {
                    // A refusal (401, 404, …) is the backend working as it should.
                    attempts?.succeeded()
                }
                handshakeDeadline = nil
                streamingResponse = true
                services.metrics.upgradeFailed(route: route.name, .backend(head.status, .backendRejected, "backend refused the upgrade"))
                var headers = ForwardedHeaders.endToEnd(head.headers)
                headers.replaceOrAdd(name: "Connection", value: "close")
                let response = HTTPResponseHead(version: .http1_1, status: head.status, headers: headers)
                downstream.client.writeResponse(.head(response), promise: nil)
            }
        case .body(let body):
            if streamingResponse {
                downstream.client.writeResponse(.body(.byteBuffer(body)), promise: nil)
                downstream.client.flushResponse()
            }
        case .end:
            if streamingResponse {
                finished = true
                downstream.client.writeResponse(.end(nil), promise: nil)
                downstream.client.flushResponse()
                handshakeHandler?.detach()
                upstream?.close(promise: nil)
                completion(.responded(backendHead.map { HTTPResponseStatus(statusCode: $0.status) }))
            } else if let validated, let backendHead {
                startRelay(backendHead: backendHead, response: validated)
            }
        case .failed(let error):
            handshakeDeadline = nil
            if streamingResponse {
                finished = true
                downstream.client.closeClient()
                completion(.responded(backendHead.map { HTTPResponseStatus(statusCode: $0.status) }))
            } else {
                let reason = "backend closed the connection during the handshake (\(BackendConnectFailure.describe(error)))"
                if retried(after: reason, label: "closed") { return }
                fail(.backend(.badGateway, .backendError, reason))
            }
        }
    }

    private func startRelay(backendHead: UpstreamResponseParser.Head, response: UpgradeResponse) {
        guard !finished, let upstream, let handshakeHandler else { return }
        guard upstream.isActive else {
            fail(.backend(.badGateway, .backendError, "backend closed the connection right after its 101"))
            return
        }
        finished = true
        handshakeDeadline = nil
        handshakeHandler.detach()

        var answer = SwitchingAnswer(backendHead: backendHead, accept: expectedAccept)
        if let index = currentIndex, let cookie = route.backends?.stickyCookie(for: index, requestHeaders: clientHead.headers) {
            answer.setCookie = cookie
        }

        let now = NIODeadline.now()
        route.metrics?.handshakeTime.recordNanoseconds((now - handshakeStartedAt).nanoseconds)
        route.metrics?.clientHandshakeTime.recordNanoseconds((now - origin.startedAt).nanoseconds)
        if let metrics = route.metrics { metrics.upgrades.increment() } else { services.metrics.upgradeSucceeded(route: route.name) }
        let registry = services.registry
        let info = ConnectionInfo(
            id: origin.connectionID ?? registry.makeID(), route: route.name, listener: origin.listener, client: origin.clientAddress,
            user: origin.identity?.user, backend: currentBackend?.url.text ?? "", subprotocol: response.protocol,
            extensions: response.extensions, startedAt: WallClock.now(), clientProtocol: origin.clientProtocol
        )
        let relay = WebSocketRelay(
            configuration: route.relayConfiguration(perMessageDeflate: response.usesExtensions),
            eventLoop: eventLoop, logger: logger, metrics: route.metrics
        ) { [services, route, path = origin.path, currentIndex] summary in
            if let currentIndex, let backends = route.backends {
                backends.ended(currentIndex)
                if let reason = Self.earlyFailure(summary) {
                    backends.failed(currentIndex, reason: reason)
                } else if summary.duration < EarlyCloseWatch.window {
                    backends.succeeded(currentIndex)
                }
            }
            Self.record(summary, info: info, path: path, route: route, services: services)
            // Last: whoever sees the connection gone from the registry (`/connections`, a drain,
            // a test) finds its access-log line and counters already written.
            services.registry.remove(info.id)
        }
        route.metrics?.activeWebSockets.increment()
        if let currentIndex, let backends = route.backends {
            backends.began(currentIndex)
            // A 101 alone does not prove the backend well (it may close at once with 1011): the
            // WebSocket counts as its success once it outlived the early window, or ended well
            // within it.
            EarlyCloseWatch.watch(info.id, in: registry, backends: backends, index: currentIndex, on: eventLoop)
        }
        if route.configuration.auth.closeOnExpiry, let expiresAt = origin.identity?.expiresAt {
            relay.closeWhenCredentialExpires(in: .nanoseconds(Int64(max(0, expiresAt - WallClock.now()) * 1e9)))
        }
        registry.register(ConnectionRegistry.Entry(info: info, relay: NIOLoopBound(relay, eventLoop: eventLoop)))

        // Both relay handlers go in first and the relay queues what reaches it until `start()`.
        // Bytes that arrived right behind the handshakes sit in the handshake handler and the
        // client's request reader, which pass them on as they leave the pipeline (NIO's decoder,
        // when it read the request, a tick later); the relay starts (and may write) only once both are gone, whether or not
        // the client is still there: a frame written through the client's HTTP handlers while
        // they are still in the pipeline would be taken for an HTTP part.
        do {
            let sync = upstream.pipeline.syncOperations
            try sync.addHandler(RelayHandler(relay: relay, side: .upstream))
            let upstreamDecoderGone = sync.removeHandler(handshakeHandler)
            let downstreamDecoderGone = downstream.switchToRelay(answer, relay)
            // Not `and`: it fails as soon as one side fails (a client that already left), which
            // would start the relay inside the backend decoder's own read of the 101.
            upstreamDecoderGone.assumeIsolated().whenComplete { _ in
                downstreamDecoderGone.assumeIsolated().whenComplete { switched in
                    relay.start()
                    // A client switch that failed (the client half-closed or left before its 101,
                    // and its channel was closed) may have left no relay handler there to report
                    // the side gone: the relay learns it here, or it would wait for it forever
                    // (and hold its registry entry and leases). Told twice is told once.
                    if case .failure = switched { relay.channelInactive(.downstream) }
                }
            }
        } catch {
            logger.error("could not switch the backend channel to the relay", metadata: ["error": "\(error)"])
            upstream.close(promise: nil)
            downstream.client.closeClient()
            return
        }
        logger.debug("websocket relaying", metadata: [
            "route": "\(route.name)", "subprotocol": "\(response.protocol ?? "")",
            "connect_ms": "\((NIODeadline.now() - connectStartedAt).nanoseconds / 1_000_000)",
        ])
        completion(.relaying)
        upstream.read()
    }

    private func fail(_ error: SluiceError) {
        finished = true
        handshakeDeadline = nil
        services.metrics.upgradeFailed(route: route.name, error)
        logger.info("websocket upgrade failed", metadata: [
            "route": "\(route.name)", "status": "\(error.status.code)", "source": "\(error.source.rawValue)", "reason": "\(error.message)",
        ])
        downstream.respond(error)
        completion(.responded(nil))
    }

    /// Why a finished WebSocket counts as its backend's failure, if it does: the backend ended it
    /// within `EarlyCloseWatch.window` of its 101 with 1011 or 1014, or by vanishing — a backend
    /// that accepts upgrades and then fails them.
    static func earlyFailure(_ summary: WebSocketRelay.Summary) -> String? {
        guard summary.duration < EarlyCloseWatch.window, let outcome = summary.outcome, outcome.initiator == .upstream else { return nil }
        if !outcome.byGateway, let code = outcome.code, code == 1011 || code == 1014 {
            return "closed a WebSocket with \(code) right after its 101"
        }
        if outcome.ending == .vanished || outcome.ending == .vanishedMidFrame {
            return "dropped a WebSocket right after its 101"
        }
        return nil
    }

    /// Metrics and the access-log line of a finished WebSocket.
    private static func record(_ summary: WebSocketRelay.Summary, info: ConnectionInfo, path: String, route: Route, services: GatewayServices) {
        let initiator: String
        if let outcome = summary.outcome, !outcome.byGateway, let side = outcome.initiator {
            initiator = side == .downstream ? "client" : "backend"
        } else {
            initiator = "gateway"
        }
        let code = summary.outcome?.code
        let ending = summary.outcome?.ending ?? .vanished
        services.metrics.websocketClosed(route: route.name, code: code, initiator: initiator, ending: ending.rawValue)
        if let metrics = route.metrics {
            metrics.activeWebSockets.decrement()
            metrics.duration.recordNanoseconds(summary.duration.nanoseconds)
            if summary.idleTimedOut { metrics.idleTimeouts.increment() }
        }
        services.logger.debug("websocket closed", metadata: [
            "id": "\(info.id)", "route": "\(info.route)", "close_code": "\(code.map(String.init) ?? "none")", "closed_by": "\(initiator)",
            "ending": "\(ending.rawValue)",
        ])
        let accessLog = services.accessLog
        guard accessLog.isEnabled else { return }
        var line = AccessRecord(type: "websocket")
        line.set("id", info.id)
        line.set("listener", info.listener)
        line.set("route", info.route)
        line.set("client", info.client)
        line.set("user", info.user)
        line.set("backend", info.backend)
        line.set("path", path)
        line.set("status", info.clientProtocol == "h2" ? 200 : 101)
        line.set("subprotocol", info.subprotocol)
        line.set("protocol", info.clientProtocol)
        line.set("duration_ms", Double(summary.duration.nanoseconds / 1000) / 1000)
        if let code { line.set("close_code", code) } else { line.setNull("close_code") }
        line.set("close_reason", summary.outcome?.reason ?? "")
        line.set("closed_by", initiator)
        line.set("ending", ending.rawValue)
        line.set("idle_timeout", summary.idleTimedOut)
        line.set("client_messages", summary.fromClient.messages)
        line.set("client_frames", summary.fromClient.frames)
        line.set("client_bytes", summary.fromClient.bytes)
        line.set("backend_messages", summary.fromBackend.messages)
        line.set("backend_frames", summary.fromBackend.frames)
        line.set("backend_bytes", summary.fromBackend.bytes)
        accessLog.write(line)
    }
}
