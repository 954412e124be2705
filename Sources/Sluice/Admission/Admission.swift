import NIOCore
import NIOHTTP1
import SluiceConfig

/// The decision on one request, the same for HTTP/1, HTTP/2 and WebSocket upgrades alike:
/// request limits, framing and host checks, routing, the upgrade's validity, Origin,
/// authentication, rate limits and the route's connection caps. Plain values in, admitted or
/// refused out, with no channel: the HTTP/1 handler and the HTTP/2 stream handler call the same
/// steps, and tests call them with no socket at all.
///
/// Three steps, because one of them waits: `screen` (everything decided from the head),
/// `authenticate` (password hashes run on a thread pool, forward auth asks a service), and
/// `lease` (an upgrade takes its place under the route's caps).
enum Admission {
    /// The facts of the connection a request came on.
    struct Connection: Sendable {
        var listener: String
        var tls: Bool
        /// The socket peer: the client, or a proxy in front of it.
        var peer: IPAddress?
        var limits: HTTPLimits
        var http2 = false
    }

    /// A request as admission reads it.
    struct Request {
        var head: HTTPRequestHead
        /// The request's host: an absolute-form target's authority, HTTP/2's `:authority`, or
        /// the `Host` field.
        var host: String?
        var framing: RequestFraming
        /// The HTTP/1 fast path read it: it cannot be an upgrade attempt.
        var simple = false
        /// HTTP/2 extended CONNECT (RFC 8441): the `:protocol` it asks for.
        var extendedConnect: String?

        init(head: HTTPRequestHead, host: String?, framing: RequestFraming, simple: Bool = false, extendedConnect: String? = nil) {
            self.head = head
            self.host = host
            self.framing = framing
            self.simple = simple
            self.extendedConnect = extendedConnect
        }
    }

    /// Who asks, once the forwarding headers have been weighed.
    struct Client: Sendable, Equatable {
        /// The socket peer.
        var peer: IPAddress?
        /// The client, after `trusted_proxies`.
        var address: IPAddress?
        var peerIsTrustedProxy: Bool

        /// Counted as one address when the peer's cannot be read (a Unix socket in tests).
        static let unknownAddress = IPAddress(bytes: [0, 0, 0, 0])!

        var addressForLimits: IPAddress { address ?? Self.unknownAddress }
    }

    /// What the request is for.
    enum Purpose {
        /// A plain request to proxy to the route's HTTP backends.
        case proxy
        /// A WebSocket: an HTTP/1.1 upgrade or an HTTP/2 extended CONNECT.
        case upgrade(UpgradeRequest)
        /// The built-in demo page.
        case demoPage
    }

    /// A request past the checks that need no waiting.
    struct Screened {
        var route: Route
        var purpose: Purpose
        var path: RequestPath
        /// The target the backend receives (and forward auth is shown).
        var target: String
        var client: Client
    }

    /// A request `screen` refused, with what was learned of it first (for the access log and
    /// the metrics).
    struct Refusal: Error {
        var error: SluiceError
        /// The route, when the refusal came after routing.
        var route: Route?
        var client: Client?
        /// It asked for a WebSocket: once its route is known, the refusal is an upgrade's.
        var wantedWebSocket = false

        /// Counted in `sluice_websocket_upgrades_total` under this route.
        var upgradeRoute: Route? { wantedWebSocket ? route : nil }
    }

    // MARK: Steps

    /// Everything decided from the head alone: size limits, framing, `Host`, the target, the
    /// route, the upgrade's validity, Origin and request rates. A refusal of a malformed head
    /// closes the connection; a refusal of a well-formed one (404, 403, 429) need not.
    static func screen(_ request: Request, on connection: Connection, routing: ListenerRouting.Snapshot) -> Result<Screened, Refusal> {
        var learned = Refusal(error: .client(.badRequest, .badRequest, ""))
        return check(request, on: connection, routing: routing, learned: &learned).mapError { error in
            learned.error = error
            return learned
        }
    }

    private static func check(
        _ request: Request, on connection: Connection, routing: ListenerRouting.Snapshot, learned: inout Refusal
    ) -> Result<Screened, SluiceError> {
        let head = request.head
        let limits = connection.limits
        if head.method.rawValue.utf8.count + head.uri.utf8.count + 10 > limits.maxRequestLine {
            return .failure(.client(.uriTooLong, .uriTooLong, "request line longer than \(limits.maxRequestLine) bytes", closing: true))
        }
        let framing = request.framing
        if framing.fieldCount > limits.maxHeaders || framing.fieldBytes > limits.maxHeaderBytes {
            return .failure(.client(.requestHeaderFieldsTooLarge, .headersTooLarge, "request headers exceed \(limits.maxHeaders) fields or \(limits.maxHeaderBytes) bytes", closing: true))
        }
        if let problem = framing.problem { return .failure(.client(.badRequest, .badRequest, problem.message, closing: true)) }
        if framing.hostCount > 1 || (head.version.major == 1 && head.version.minor >= 1 && framing.hostCount != 1) {
            return .failure(.client(.badRequest, .badRequest, "exactly one Host header is required", closing: true))
        }
        if framing.authorizationCount > 1 { return .failure(.client(.badRequest, .badRequest, "more than one Authorization header", closing: true)) }
        if framing.originCount > 1 { return .failure(.client(.badRequest, .badRequest, "more than one Origin header", closing: true)) }
        if let host = request.host, !HTTPSyntax.isValidHost(host) {
            return .failure(.client(.badRequest, .badRequest, "invalid Host header", closing: true))
        }
        let path: RequestPath
        do {
            path = try RequestPath.parse(head.uri)
        } catch {
            return .failure(.client(.badRequest, .badRequest, "invalid request target", closing: true))
        }
        let client = identify(head.headers, peer: connection.peer, trusted: routing.trustedProxies)
        learned.client = client
        guard let route = routing.routes.route(host: request.host, path: path.path) else {
            return .failure(.client(.notFound, .noRoute, "no route for this host and path"))
        }
        learned.route = route
        func screened(_ purpose: Purpose, upgrade: Bool) -> Screened {
            Screened(route: route, purpose: purpose, path: path, target: route.upstreamTarget(for: path, upgrade: upgrade), client: client)
        }
        if route.configuration.builtin == .demo {
            // The page itself, not a catch-all: /favicon.ico and friends are 404s.
            guard DemoPage.serves(path.path, prefix: route.configuration.match.pathPrefix) else {
                return .failure(.client(.notFound, .noRoute, "no such page"))
            }
            guard head.method == .GET || head.method == .HEAD else {
                return .failure(.client(.methodNotAllowed, .methodNotAllowed, "only GET and HEAD", headers: [("Allow", "GET, HEAD")]))
            }
            return .success(screened(.demoPage, upgrade: false))
        }
        let wantsWebSocket = request.extendedConnect != nil || (!request.simple && framing.upgradeCount > 0 && UpgradeRequest.isAttempt(head))
        learned.wantedWebSocket = wantsWebSocket
        guard wantsWebSocket else {
            guard route.servesHTTP else {
                return .failure(.client(.upgradeRequired, .upgradeRequired, "this route accepts WebSocket connections only", headers: [("Upgrade", "websocket")]))
            }
            // Browsers send Origin on cross-site requests that can change state; a request
            // without one (a navigation, a non-browser client) is not refused for that.
            if let policy = route.configuration.origin, let origin = head.headers.first(name: "origin"), !policy.allows(origin) {
                return .failure(.client(.forbidden, .originRejected, "this origin may not call this route"))
            }
            if let rejection = route.limiter.admitRequest(ip: client.addressForLimits) {
                return .failure(.limited(rejection))
            }
            return .success(screened(.proxy, upgrade: false))
        }
        let upgrade: UpgradeRequest
        do {
            if let wanted = request.extendedConnect {
                upgrade = try UpgradeRequest.validateExtendedConnect(head, protocol: wanted, allowedProtocols: route.websocket.subprotocols)
            } else {
                upgrade = try UpgradeRequest.validate(head, allowedProtocols: route.websocket.subprotocols)
            }
        } catch {
            return .failure(.client(error.status, .badRequest, error.message, headers: error.headers, closing: true))
        }
        if let policy = route.configuration.origin, !policy.allows(head.headers.first(name: "origin")) {
            return .failure(.client(.forbidden, .originRejected, "this origin may not open WebSockets here", closing: true))
        }
        return .success(screened(.upgrade(upgrade), upgrade: true))
    }

    /// The route's authentication (none on public routes): the identity it admits, or the
    /// refusal. Completes on `eventLoop`.
    static func authenticate(
        _ screened: Screened, _ request: Request, on connection: Connection, eventLoop: any EventLoop
    ) -> EventLoopFuture<Result<Identity?, SluiceError>> {
        guard let authenticator = screened.route.authenticator else { return eventLoop.makeSucceededFuture(.success(nil)) }
        let authRequest = RouteAuthenticator.Request(
            head: request.head, query: screened.path.query, target: screened.target, host: request.host,
            client: screened.client.address, tls: connection.tls
        )
        return authenticator.authenticate(authRequest, on: eventLoop)
            .map { result in result.map { Optional($0) } }
            .recover { _ in .failure(SluiceError(source: .gateway, status: .serviceUnavailable, label: .authUnavailable, message: "authentication is unavailable; retry later")) }
    }

    /// An admitted WebSocket's place under the route's caps (per route, address and user) and
    /// upgrade rates; the lease must be released when the client connection ends.
    static func lease(_ screened: Screened, identity: Identity?) -> Result<AdmissionLease, SluiceError> {
        screened.route.limiter.admit(ip: screened.client.addressForLimits, user: identity?.user).mapError { .limited($0) }
    }

    /// An upgrade's leases: those `decide` already took, or the local one taken now (the path
    /// that did not wait).
    static func leases(_ screened: Screened, identity: Identity?, granted: Leases?) -> Result<Leases, SluiceError> {
        if let granted { return .success(granted) }
        return lease(screened, identity: identity).map { Leases(local: $0) }
    }

    /// What a request that passed every step carries on.
    struct Grant: Sendable {
        var identity: Identity?
        /// An upgrade's places under the caps; `nil` for a plain request.
        var leases: Leases?
    }

    /// An upgrade's places under the route's caps, here and in the cluster: given back together
    /// when the client connection ends (each exactly once, whatever calls `release`).
    struct Leases: Sendable {
        var local: AdmissionLease
        var cluster: ClusterLease?
        /// The id the connection will have in the registry, already named in the cluster view.
        var connectionID: UInt64?

        func release() {
            local.release()
            cluster?.release()
        }
    }

    /// Whether admission must wait before it can answer: for authentication, or for the
    /// cluster's store (every WebSocket takes a lease there; plain requests only where the
    /// route has a per-address or per-user request rate).
    static func waits(_ screened: Screened, cluster: ClusterStore?) -> Bool {
        if screened.route.authenticator != nil { return true }
        guard cluster != nil else { return false }
        switch screened.purpose {
        case .upgrade: return true
        case .proxy: return screened.route.configuration.limits.requestRatePerIP != nil
        case .demoPage: return false
        }
    }

    /// The steps that wait: authentication, then for a plain request the per-user and the
    /// cluster's request rates, for an upgrade its leases here and in the cluster. Completes on
    /// `eventLoop`; a grant whose connection is gone by then must be released by the caller.
    static func decide(
        _ screened: Screened, _ request: Request, on connection: Connection, cluster: ClusterStore?, registry: ConnectionRegistry,
        eventLoop: any EventLoop
    ) -> EventLoopFuture<Result<Grant, SluiceError>> {
        authenticate(screened, request, on: connection, eventLoop: eventLoop).flatMap { result -> EventLoopFuture<Result<Grant, SluiceError>> in
            let identity: Identity?
            switch result {
            case .success(let value): identity = value
            case .failure(let error): return eventLoop.makeSucceededFuture(.failure(error))
            }
            let route = screened.route
            let check = ClusterStore.Check(route: route.name, limits: route.configuration.limits, user: identity?.user, ip: screened.client.addressForLimits)
            switch screened.purpose {
            case .demoPage:
                return eventLoop.makeSucceededFuture(.success(Grant(identity: identity)))
            case .proxy:
                if let user = identity?.user, let rejection = route.limiter.admitRequest(user: user) {
                    return eventLoop.makeSucceededFuture(.failure(.limited(rejection)))
                }
                guard let cluster else { return eventLoop.makeSucceededFuture(.success(Grant(identity: identity))) }
                return cluster.admitRequest(check).hop(to: eventLoop).map { refusal in
                    refusal.map { .failure($0) } ?? .success(Grant(identity: identity))
                }
            case .upgrade:
                let local: AdmissionLease
                switch lease(screened, identity: identity) {
                case .success(let value): local = value
                case .failure(let error): return eventLoop.makeSucceededFuture(.failure(error))
                }
                guard let cluster else { return eventLoop.makeSucceededFuture(.success(Grant(identity: identity, leases: Leases(local: local)))) }
                let id = registry.makeID()
                let summary = ClusterStore.Summary(connectionID: id, listener: connection.listener, client: screened.client.address?.description ?? "unknown")
                return cluster.admit(check, summary: summary).hop(to: eventLoop).map { result in
                    switch result {
                    case .success(let clusterLease):
                        return .success(Grant(identity: identity, leases: Leases(local: local, cluster: clusterLease, connectionID: id)))
                    case .failure(let error):
                        local.release()
                        return .failure(error)
                    }
                }
            }
        }
    }

    /// The client behind `peer`: its own address, or, when `peer` is a trusted proxy, the one
    /// its `X-Forwarded-For` chain names.
    static func identify(_ headers: HTTPHeaders, peer: IPAddress?, trusted: [CIDR]) -> Client {
        let peerIsTrusted = peer.map { ClientAddress.isTrusted($0, trusted) } ?? false
        let address = peerIsTrusted ? ClientAddress.resolve(peer: peer, headers: headers, trusted: trusted) : peer
        return Client(peer: peer, address: address, peerIsTrustedProxy: peerIsTrusted)
    }
}
