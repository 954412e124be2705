import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import NIOSSL
import SluiceConfig

/// One bound listening socket and what it serves now. A reload swaps its settings, TLS context
/// and routing without touching the socket (no bind gap, no refused connection); new
/// connections read them when accepted, kept-alive ones at their next request. It tracks its
/// open connections so a drain can tell them to finish and, at the deadline, close them.
final class LiveListener: Sendable {
    /// What a connection accepted now is set up with.
    struct Settings: Sendable {
        var configuration: ListenerConfiguration
        var tls: TLS?
    }

    /// A TLS listener's context and the certificates in it (their SHA-256 fingerprints).
    struct TLS: Sendable {
        var context: NIOSSLContext
        var fingerprints: [String]
    }

    let name: String
    let channel: any Channel
    let routing: ListenerRouting
    private let settings: NIOLockedValueBox<Settings>
    private let connections: NIOLockedValueBox<[ObjectIdentifier: any Channel]>

    private init(name: String, channel: any Channel, routing: ListenerRouting, settings: NIOLockedValueBox<Settings>, connections: NIOLockedValueBox<[ObjectIdentifier: any Channel]>) {
        self.name = name
        self.channel = channel
        self.routing = routing
        self.settings = settings
        self.connections = connections
    }

    var configuration: ListenerConfiguration { settings.withLockedValue { $0.configuration } }

    /// Where it listens, as operators write it (`127.0.0.1:8443`, `[::1]:8443`).
    var address: String { channel.localAddress.map(Self.describe) ?? "unbound" }

    static func describe(_ address: SocketAddress) -> String {
        guard let ip = address.ipAddress, let port = address.port else { return "\(address)" }
        return ip.contains(":") ? "[\(ip)]:\(port)" : "\(ip):\(port)"
    }

    /// Binds `configuration`'s address; errors name the listener's key.
    static func bind(
        _ configuration: ListenerConfiguration, index: Int, tls: TLS?, routing: ListenerRouting,
        services: GatewayServices, group: any EventLoopGroup
    ) async throws(ConfigError) -> LiveListener {
        let settings = NIOLockedValueBox(Settings(configuration: configuration, tls: tls))
        let connections = NIOLockedValueBox<[ObjectIdentifier: any Channel]>([:])
        let name = configuration.name
        let metrics = services.metrics
        let active = metrics.meter("sluice_connections_active", [("listener", name)])
        let listenerMetrics = metrics.listener(name)
        let limiter = services.connectionLimiter
        let logger = services.logger
        let bootstrap = ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: Int32(configuration.backlog))
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            // On the listening socket: every accepted one inherits them (keep-alive with its
            // timer armed), at no syscall of its own.
            .serverChannelOption(.tcpOption(.tcp_nodelay), value: 1)
            .serverChannelOption(.socketOption(.so_keepalive), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    // Options set here, synchronously, rather than as the bootstrap's child
                    // options, which it applies through a chain of futures: ~6% of a connection's
                    // CPU when each request comes on a new one. A plain-HTTP client that
                    // half-closes after its request still gets the answer (HTTPGatewayHandler
                    // closes once it is written); over TLS a close_notify ends the connection,
                    // as with every peer proxy.
                    let now = settings.withLockedValue { $0 }
                    guard let options = channel.syncOptions else { throw ChannelError.operationUnsupported }
                    try options.setOption(.allowRemoteHalfClosure, value: now.tls == nil)
                    try options.setOption(.recvAllocator, value: ReceiveBuffers.client)
                    listenerMetrics.accepted.increment()
                    let socketPeer = ClientAddress.ip(of: channel.remoteAddress)
                    /// Admits the client (its address from the socket, or from a PROXY header)
                    /// against the connection limits and serves HTTP; whether it was admitted.
                    /// `releaseOnClose`: the admission is given back by a close callback of its
                    /// own; otherwise the caller's close callback gives it back.
                    @discardableResult
                    func admit(_ peer: IPAddress?, releaseOnClose: Bool) throws -> Bool {
                        if let rejection = limiter.admit(peer) {
                            // Refused before any TLS work: the cheapest answer to a flood.
                            metrics.limitRejected(rejection)
                            channel.close(promise: nil)
                            return false
                        }
                        if releaseOnClose { channel.closeFuture.whenComplete { _ in limiter.release(peer) } }
                        do {
                            try HTTPVersionSelection.install(on: channel, settings: now, routing: routing, services: services, peer: peer)
                        } catch {
                            if !releaseOnClose { limiter.release(peer) }
                            throw error
                        }
                        return true
                    }
                    active.increment()
                    let id = ObjectIdentifier(channel)
                    connections.withLockedValue { $0[id] = channel }
                    /// What a connection's close undoes; when `admitted`, the admission of
                    /// `peer` too.
                    @Sendable func closed(_ peer: IPAddress?, admitted: Bool) {
                        connections.withLockedValue { _ = $0.removeValue(forKey: id) }
                        active.decrement()
                        if admitted { limiter.release(peer) }
                    }
                    guard let version = now.configuration.proxyProtocol else {
                        // One callback on the close for all of it: each further one costs
                        // NIO an array and the callback a closure, per connection.
                        let admitted: Bool
                        do {
                            admitted = try admit(socketPeer, releaseOnClose: false)
                        } catch {
                            channel.closeFuture.whenComplete { _ in closed(socketPeer, admitted: false) }
                            throw error
                        }
                        channel.closeFuture.whenComplete { _ in closed(socketPeer, admitted: admitted) }
                        return
                    }
                    channel.closeFuture.whenComplete { _ in closed(socketPeer, admitted: false) }
                    guard let balancer = socketPeer, now.configuration.proxyProtocolFrom.contains(where: { $0.contains(balancer) }) else {
                        metrics.proxyProtocolRefused(listener: name, reason: "untrusted_peer")
                        logger.info("PROXY protocol: connection from a peer not in proxy_protocol_from refused", metadata: [
                            "listener": "\(name)", "peer": "\(socketPeer.map { "\($0)" } ?? "unknown")",
                        ])
                        channel.close(promise: nil)
                        return
                    }
                    try channel.pipeline.syncOperations.addHandler(ProxyProtocolHandler(
                        version: version, timeout: TimeAmount(now.configuration.http.headerTimeout),
                        accepted: { header in try admit(header.source ?? socketPeer, releaseOnClose: true) },
                        refused: { label, reason in
                            metrics.proxyProtocolRefused(listener: name, reason: label)
                            logger.info("PROXY protocol: connection refused", metadata: [
                                "listener": "\(name)", "peer": "\(balancer)", "reason": "\(reason)",
                            ])
                        }
                    ))
                }
            }
        do {
            let channel = try await bootstrap.bind(host: configuration.address.host, port: configuration.address.port).get()
            return LiveListener(name: name, channel: channel, routing: routing, settings: settings, connections: connections)
        } catch {
            throw ConfigError(path: "listeners[\(index)].address", message: "cannot listen on \(configuration.address): \(error)")
        }
    }

    /// A reload's new settings for this socket: new connections use them from now on.
    /// When the listener's HTTP settings or certificates changed, its HTTP/2 connections are
    /// sent a graceful GOAWAY, so clients open new ones with the new settings.
    func update(configuration: ListenerConfiguration, tls: TLS?, routing snapshot: ListenerRouting.Snapshot) {
        let changed = settings.withLockedValue { current in
            defer { current = Settings(configuration: configuration, tls: tls) }
            return current.configuration != configuration || current.tls?.fingerprints != tls?.fingerprints
        }
        routing.replace(snapshot)
        guard changed else { return }
        let open = connections.withLockedValue { Array($0.values) }
        for connection in open {
            connection.pipeline.fireUserInboundEventTriggered(HTTP2Connection.ListenerChanged())
        }
    }

    /// Connections accepted here and still open (WebSockets and HTTP alike).
    var openConnections: Int { connections.withLockedValue { $0.count } }

    /// Stops accepting and tells every open connection to finish: an idle HTTP connection
    /// closes, a busy one after its answer, an HTTP/2 connection sends a graceful GOAWAY.
    /// (WebSockets ignore it: the drain closes them.) Returns once every connection has heard
    /// it, so the drain's WebSocket closes, scheduled next, come after: an HTTP/2 client is
    /// told GOAWAY before any of its WebSockets gets 1001, whatever order its event loop
    /// would run a scheduled close and a task in.
    func stopAccepting() async {
        try? await channel.close()
        let open = connections.withLockedValue { Array($0.values) }
        guard let first = open.first else { return }
        let told = open.map { connection in
            connection.eventLoop.submit {
                connection.pipeline.syncOperations.fireUserInboundEventTriggered(ChannelShouldQuiesceEvent())
            }
        }
        try? await EventLoopFuture.andAllComplete(told, on: first.eventLoop).get()
    }

    /// Closes whatever is still open (the drain's deadline).
    func closeAll() {
        let open = connections.withLockedValue { Array($0.values) }
        for connection in open { connection.close(promise: nil) }
    }
}
