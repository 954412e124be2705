import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL
import Synchronization
import SluiceConfig
import Crypto
import Foundation

/// One backend ready to connect to: address, scheme, and for `wss` the TLS context built once.
/// A class, made once per configuration: every proxied request refers to its backend, and a
/// reference costs one retain where a copy of the fields costs one per field.
final class Backend: Sendable {
    let url: BackendURL
    let host: String
    let port: Int
    let path: String
    /// `nil` for plain `ws`.
    let tls: NIOSSLContext?
    /// SNI and verification name for `wss`.
    let serverName: String?
    /// The address itself when `host` is an IP literal: connecting to it skips name resolution
    /// (NIO's resolver hands getaddrinfo to a dispatch queue and back) and the happy-eyeballs
    /// machinery.
    let literalAddress: SocketAddress?
    /// `Host` value naming this backend (default ports omitted).
    let hostHeader: String
    /// Which pooled connections this backend may use, hashed once.
    let poolIdentity: PoolIdentity

    init(url: BackendURL, host: String, port: Int, path: String, tls: NIOSSLContext?, serverName: String?) {
        self.url = url
        self.host = host
        self.port = port
        self.path = path
        self.tls = tls
        self.serverName = serverName
        literalAddress = IPAddressText.isIPv4(host) || IPAddressText.isIPv6(host) ? try? SocketAddress(ipAddress: host, port: port) : nil
        let defaultPort = tls == nil ? 80 : 443
        let name = host.contains(":") ? "[\(host)]" : host
        hostHeader = port == defaultPort ? name : "\(name):\(port)"
        poolIdentity = PoolIdentity(url: url.text, tls: tls.map { ObjectIdentifier($0) }, serverName: serverName)
    }

    /// Connections are shared only between identical backends: same URL, same TLS context (so
    /// the same CA and verification) and server name. Two routes that verify one address
    /// differently never share a connection; two routes naming the same backend do.
    struct PoolIdentity: Hashable, Sendable {
        let url: String
        let tls: ObjectIdentifier?
        let serverName: String?
        /// Computed once: the pool looks an identity up twice per request.
        let hash: Int

        init(url: String, tls: ObjectIdentifier?, serverName: String?) {
            self.url = url
            self.tls = tls
            self.serverName = serverName
            var hasher = Hasher()
            hasher.combine(url)
            hasher.combine(tls)
            hasher.combine(serverName)
            hash = hasher.finalize()
        }

        func hash(into hasher: inout Hasher) { hasher.combine(hash) }

        static func == (lhs: PoolIdentity, rhs: PoolIdentity) -> Bool {
            lhs.hash == rhs.hash && lhs.tls == rhs.tls && lhs.url == rhs.url && lhs.serverName == rhs.serverName
        }
    }

    /// Connects to this backend with an HTTP/1.1 client pipeline (TLS first for wss/https)
    /// ending in `handler`. `leftovers` says what the response decoder does with bytes after
    /// the last response when it leaves: forward them (the relay needs a WebSocket's first frames),
    /// or drop them.
    func connectHTTP<Handler: ChannelHandler>(
        on eventLoop: any EventLoop, timeout: TimeAmount, leftovers: RemoveAfterUpgradeStrategy, handler: Handler
    ) -> EventLoopFuture<any Channel> {
        connect(on: eventLoop, timeout: timeout, codecs: leftovers, handler: handler)
    }

    /// Connects to this backend (TLS first for https) with `handler` reading and writing the
    /// bytes itself: the proxy's own HTTP/1.1 framing, no NIO codecs.
    func connectBytes<Handler: ChannelHandler>(on eventLoop: any EventLoop, timeout: TimeAmount, handler: Handler) -> EventLoopFuture<any Channel> {
        connect(on: eventLoop, timeout: timeout, codecs: nil, handler: handler)
    }

    private func connect<Handler: ChannelHandler>(
        on eventLoop: any EventLoop, timeout: TimeAmount, codecs leftovers: RemoveAfterUpgradeStrategy?, handler: Handler
    ) -> EventLoopFuture<any Channel> {
        // The initializer runs on `eventLoop`, where the handler was made.
        let handler = NIOLoopBound(handler, eventLoop: eventLoop)
        let bootstrap = ClientBootstrap(group: eventLoop)
            .connectTimeout(timeout)
            .channelInitializer { [self] channel in
                channel.eventLoop.makeCompletedFuture {
                    // Synchronously, not as a bootstrap option applied through futures.
                    guard let options = channel.syncOptions else { throw ChannelError.operationUnsupported }
                    try options.setOption(.socketOption(.tcp_nodelay), value: 1)
                    let sync = channel.pipeline.syncOperations
                    if let tls {
                        try sync.addHandler(NIOSSLClientHandler(context: tls, serverHostname: serverName))
                    }
                    if let leftovers {
                        try sync.addHandler(HTTPRequestEncoder())
                        try sync.addHandler(ByteToMessageHandler(HTTPResponseDecoder(leftOverBytesStrategy: leftovers)))
                    }
                    try sync.addHandler(handler.value)
                }
            }
        if let address = literalAddress { return bootstrap.connect(to: address) }
        return bootstrap.connect(host: host, port: port)
    }

    /// The request target for a client path: the backend URL's path, then the client's.
    func target(for requestTarget: String) -> String {
        if path == "/" || path.isEmpty { return requestTarget }
        let base = path.hasSuffix("/") ? String(path.dropLast()) : path
        return base + requestTarget
    }
}

/// A route's backends and the choice among them: round robin or least connections, sticky by
/// cookie or client address, skipping backends that failed `max_fails` connects in a row for
/// `cool_down`. Plain requests and upgrades choose the same way, so a client's polling and its
/// upgrade reach the same backend.
final class BackendSet: Sendable {
    let backends: [Backend]
    let balance: BalancingConfiguration
    private let next = Atomic<Int>(0)
    /// Per backend: requests and WebSockets in flight, connect failures in a row, and the
    /// monotonic time (ns) until which it is skipped.
    private let stats: [BackendStats]
    /// Cookie values naming each backend (a digest of its URL, stable across restarts).
    let stickyIDs: [String]

    /// The `Set-Cookie` value that pins a client to backend `index`, when stickiness is by
    /// cookie and the request (`headers`) does not already carry that pin.
    func stickyCookie(for index: Int, requestHeaders headers: HTTPHeaders) -> String? {
        guard case .cookie(let name) = balance.sticky, CookieHeader.value(named: name, in: headers) != stickyIDs[index] else { return nil }
        return "\(name)=\(stickyIDs[index]); Path=/; HttpOnly; SameSite=Lax"
    }

    init(backends: [Backend], balance: BalancingConfiguration = BalancingConfiguration()) {
        precondition(!backends.isEmpty, "a route has at least one backend")
        self.backends = backends
        self.balance = balance
        stats = backends.map { _ in BackendStats() }
        stickyIDs = backends.map { backend in
            String(Array(SHA256.hash(data: Array(backend.url.text.utf8))).prefix(6).map { String(format: "%02x", $0) }.joined())
        }
    }

    /// Up to `attempts` distinct backends in the order to try them, for one request or
    /// connection and its retries.
    func candidates(attempts: Int, client: IPAddress? = nil, stickyCookie: String? = nil) -> [Int] {
        let count = backends.count
        // One backend: nothing to choose, whatever its health (a lone backend is never skipped).
        if count == 1 { return [0] }
        let now = MonotonicClock.nanoseconds()
        let healthy = (0..<count).filter { stats[$0].skippedUntil.load(ordering: .relaxed) <= now }
        let pool = healthy.isEmpty ? Array(0..<count) : healthy
        var order: [Int]
        switch balance.policy {
        case .roundRobin:
            let start = next.add(1, ordering: .relaxed).oldValue
            order = (0..<pool.count).map { pool[(start &+ $0) % pool.count] }
        case .leastConnections:
            let start = next.add(1, ordering: .relaxed).oldValue
            let rotated = (0..<pool.count).map { pool[(start &+ $0) % pool.count] }
            order = rotated.enumerated().sorted { lhs, rhs in
                let (a, b) = (stats[lhs.element].active.load(ordering: .relaxed), stats[rhs.element].active.load(ordering: .relaxed))
                return a != b ? a < b : lhs.offset < rhs.offset
            }.map(\.element)
        }
        var preferred: Int?
        switch balance.sticky {
        case .none: break
        case .cookie:
            if let stickyCookie, let index = stickyIDs.firstIndex(of: stickyCookie), pool.contains(index) { preferred = index }
        case .clientIP:
            if let client { preferred = Self.rendezvous(client, among: pool, ids: stickyIDs) }
        }
        if let preferred {
            order.removeAll { $0 == preferred }
            order.insert(preferred, at: 0)
        }
        return Array(order.prefix(max(1, min(attempts, count))))
    }

    /// Highest-random-weight hashing: each client goes to the backend whose hash with the
    /// client's address scores highest, so adding a backend moves only the clients it wins.
    static func rendezvous(_ client: IPAddress, among pool: [Int], ids: [String]) -> Int? {
        pool.max { lhs, rhs in score(client, ids[lhs]) < score(client, ids[rhs]) }
    }

    private static func score(_ client: IPAddress, _ id: String) -> UInt64 {
        // FNV-1a over the address bytes and the backend id: stable across processes.
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in client.bytes + Array(id.utf8) {
            hash ^= UInt64(byte)
            hash = hash &* 0x0000_0100_0000_01b3
        }
        return hash
    }

    func backend(_ index: Int) -> Backend { backends[index] }

    /// Counts a request or WebSocket in flight on backend `index` (for least connections).
    func began(_ index: Int) { stats[index].active.add(1, ordering: .relaxed) }
    func ended(_ index: Int) { stats[index].active.subtract(1, ordering: .relaxed) }

    /// Passive health: connects that succeed reset the count; `max_fails` failures in a row
    /// skip the backend for `cool_down`.
    func connectSucceeded(_ index: Int) { stats[index].failures.store(0, ordering: .relaxed) }
    func connectFailed(_ index: Int) {
        let count = stats[index].failures.add(1, ordering: .relaxed).newValue
        if count >= balance.maxFails {
            stats[index].skippedUntil.store(MonotonicClock.nanoseconds() + balance.coolDown.nanoseconds, ordering: .relaxed)
            stats[index].failures.store(0, ordering: .relaxed)
        }
    }
    func isSkipped(_ index: Int) -> Bool { stats[index].skippedUntil.load(ordering: .relaxed) > MonotonicClock.nanoseconds() }

    /// Builds the set for `route`; `builtinAddresses` maps built-in backends to their loopback ports.
    static func make(for route: RouteConfiguration, routeIndex: Int, builtinPorts: [BackendURL.Builtin: Int]) throws(ConfigError) -> BackendSet {
        var tlsContext: NIOSSLContext?
        var result: [Backend] = []
        for (index, url) in route.backends.enumerated() {
            switch url.target {
            case .builtin(let builtin):
                guard let port = builtinPorts[builtin] else {
                    throw ConfigError(path: "routes[\(routeIndex)].backends[\(index)]", message: "built-in backend is not running")
                }
                result.append(Backend(url: url, host: "127.0.0.1", port: port, path: "/", tls: nil, serverName: nil))
            case .remote(let scheme, let host, let port, let path):
                var context: NIOSSLContext?
                if scheme.isSecure {
                    if tlsContext == nil { tlsContext = try makeClientContext(route.backendTLS, routeIndex: routeIndex) }
                    context = tlsContext
                }
                result.append(Backend(
                    url: url, host: host, port: port, path: path, tls: context,
                    serverName: route.backendTLS.serverName ?? (IPAddressText.isIPv4(host) || IPAddressText.isIPv6(host) ? nil : host)
                ))
            }
        }
        return BackendSet(backends: result, balance: route.balance)
    }

    static func makeClientContext(_ configuration: BackendTLSConfiguration, routeIndex: Int) throws(ConfigError) -> NIOSSLContext {
        var tls = TLSConfiguration.makeClientConfiguration()
        tls.applicationProtocols = ["http/1.1"]
        if configuration.insecureSkipVerify {
            tls.certificateVerification = .none
        } else if let caFile = configuration.caFile {
            tls.trustRoots = .file(caFile)
        }
        do {
            return try NIOSSLContext(configuration: tls)
        } catch {
            throw ConfigError(path: "routes[\(routeIndex)].backend_tls", message: "cannot build the backend TLS context: \(error)")
        }
    }
}

/// One backend's live figures, shared by every event loop.
final class BackendStats: Sendable {
    let active = Atomic<Int>(0)
    let failures = Atomic<Int>(0)
    let skippedUntil = Atomic<Int64>(0)
}
