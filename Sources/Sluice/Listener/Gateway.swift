import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL
import ServiceLifecycle
import SluiceConfig
import Synchronization

/// The running gateway: every listener of one configuration, the built-in backends, and the
/// registry of live WebSockets. A `Service`, so SIGTERM/SIGINT stop it cleanly.
public final class Gateway: Service, Sendable {
    /// What `start()` bound, for logs and tests.
    public struct BoundListener: Sendable {
        public var name: String
        public var address: SocketAddress
        public var tls: Bool
    }

    /// Where the gateway is in its life, as `/readyz` reports it.
    public enum Phase: UInt8, Sendable {
        case starting, ready, draining, stopped
    }

    public let configuration: Configuration
    public let registry = ConnectionRegistry()
    public let metrics = GatewayMetrics()
    private let group: any EventLoopGroup
    private let logger: Logger
    private let servers = NIOLockedValueBox<[any Channel]>([])
    private let adminServer = NIOLockedValueBox<AdminServer?>(nil)
    private let echoBackends = NIOLockedValueBox<[EchoBackend]>([])
    private let phaseValue = Atomic<UInt8>(Phase.starting.rawValue)
    private let services: NIOLockedValueBox<GatewayServices?> = NIOLockedValueBox(nil)

    public init(configuration: Configuration, group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton, logger: Logger) {
        self.configuration = configuration
        self.group = group
        self.logger = logger
    }

    public var phase: Phase { Phase(rawValue: phaseValue.load(ordering: .acquiring)) ?? .stopped }

    /// Open client TCP connections counted by `limits.max_connections` (for tests and admin).
    public var openConnections: Int { services.withLockedValue { $0?.connectionLimiter.total ?? 0 } }

    /// `true` when no route holds a count for any connection: every lease came back.
    public var limitCountersAreIdle: Bool {
        let routes = self.routes.withLockedValue { $0 }
        return routes.allSatisfy { $0.limiter?.isIdle ?? true } && openConnections == 0
            && (services.withLockedValue { $0?.connectionLimiter.trackedAddresses } ?? 0) == 0
    }

    private let routes = NIOLockedValueBox<[Route]>([])

    /// Brings the limit gauges up to this moment (before a scrape).
    func updateLimitMetrics() {
        metrics.updateLimits(routes: routes.withLockedValue { $0 }, connections: services.withLockedValue { $0?.connectionLimiter })
    }

    /// The admin listener's address, once bound.
    public var adminAddress: SocketAddress? { adminServer.withLockedValue { $0?.address } }

    /// Loads certificates (generating the dev certificate where asked), starts the built-in
    /// backends and binds every listener. Errors name the config key at fault.
    @discardableResult
    public func start() async throws -> [BoundListener] {
        for listener in configuration.listeners {
            for certificate in listener.tls?.certificates ?? [] where try DevCertificate.generateIfMissing(certificate) {
                logger.notice("generated a development certificate", metadata: ["cert": "\(certificate.certificateFile)", "key": "\(certificate.keyFile)"])
            }
        }
        var builtinPorts: [BackendURL.Builtin: Int] = [:]
        let needsEcho = configuration.routes.contains { route in route.backends.contains { $0.target == .builtin(.echo) } }
        if needsEcho {
            let echo = try await EchoBackend.start(group: group)
            echoBackends.withLockedValue { $0.append(echo) }
            builtinPorts[.echo] = echo.port
        }
        let accessLog: AccessLog?
        do {
            accessLog = try AccessLog.open(configuration.accessLog)
        } catch {
            throw ConfigError(path: "access_log", message: error.description)
        }
        let services = GatewayServices(registry: registry, metrics: metrics, accessLog: accessLog, limits: configuration.limits, logger: logger)
        self.services.withLockedValue { $0 = services }
        let routes = try await Self.makeRoutes(configuration, builtinPorts: builtinPorts, metrics: metrics)
        for warning in ConfigurationWarnings.compute(configuration) { logger.warning("\(warning)") }
        self.routes.withLockedValue { $0 = routes }
        if let admin = configuration.admin {
            let server = try await AdminServer.start(configuration: admin, gateway: self, group: group, logger: logger)
            adminServer.withLockedValue { $0 = server }
            logger.notice("admin listening", metadata: ["address": "\(server.address)"])
        }
        var bound: [BoundListener] = []
        for (index, listener) in configuration.listeners.enumerated() {
            var tlsContext: NIOSSLContext?
            if let tls = listener.tls {
                let store = try CertificateStore(configuration: tls)
                for entry in store.entries {
                    logger.info("certificate loaded", metadata: ["listener": "\(listener.name)", "names": "\(entry.names.joined(separator: ","))", "sha256": "\(entry.fingerprint)"])
                }
                do {
                    tlsContext = try NIOSSLContext(configuration: store.serverConfiguration(minimumVersion: tls.minimumVersion))
                } catch {
                    throw ConfigError(path: "listeners[\(index)].tls", message: "cannot build the TLS context: \(error)")
                }
            }
            let channel = try await bind(listener, index: index, tls: tlsContext, routes: RouteTable(routes: routes, listener: listener.name), services: services)
            servers.withLockedValue { $0.append(channel) }
            if let address = channel.localAddress {
                bound.append(BoundListener(name: listener.name, address: address, tls: tlsContext != nil))
                logger.notice("listening", metadata: ["listener": "\(listener.name)", "address": "\(address)", "tls": "\(tlsContext != nil)"])
            }
        }
        phaseValue.store(Phase.ready.rawValue, ordering: .releasing)
        return bound
    }

    /// Builds the runtime routes (backend sets, TLS contexts, verification keys) of a configuration.
    static func makeRoutes(_ configuration: Configuration, builtinPorts: [BackendURL.Builtin: Int], metrics: GatewayMetrics? = nil) async throws(ConfigError) -> [Route] {
        var identityHeaders: Set<String> = ["x-sluice-user"]
        for route in configuration.routes {
            identityHeaders.insert(route.auth.userHeader.lowercased())
            for case .forward(let forward) in route.auth.methods {
                identityHeaders.formUnion(forward.copyHeaders.map { $0.lowercased() })
            }
        }
        var routes: [Route] = []
        for (index, route) in configuration.routes.enumerated() {
            let backends = route.backends.isEmpty ? nil : try BackendSet.make(for: route, routeIndex: index, builtinPorts: builtinPorts)
            let authenticator = route.auth.isPublic
                ? nil : try await RouteAuthenticator(configuration: route.auth, routeIndex: index, threadPool: .singleton)
            routes.append(Route(
                configuration: route, backends: backends, metrics: metrics?.route(route.name),
                authenticator: authenticator, identityHeaders: identityHeaders
            ))
        }
        return routes
    }

    private func bind(_ listener: ListenerConfiguration, index: Int, tls: NIOSSLContext?, routes: RouteTable, services: GatewayServices) async throws -> any Channel {
        let handshakeTimeout = listener.tls.map { TimeAmount($0.handshakeTimeout) }
        let httpConfiguration = HTTPGatewayHandler.Configuration(listener: listener.name, tls: tls != nil, limits: listener.http)
        let listenerName = listener.name
        let metrics = services.metrics
        let active = metrics.meter("sluice_connections_active", [("listener", listenerName)])
        let limiter = services.connectionLimiter
        let bootstrap = ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: Int32(listener.backlog))
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    // Set here, synchronously, rather than as the bootstrap's child options,
                    // which it applies through a chain of futures: ~6% of a connection's CPU
                    // when each request comes on a new one. A plain-HTTP client that
                    // half-closes after its request still gets the answer (HTTPGatewayHandler
                    // closes once it is written); over TLS a close_notify ends the connection,
                    // as with every peer proxy.
                    guard let options = channel.syncOptions else { throw ChannelError.operationUnsupported }
                    try options.setOption(.socketOption(.tcp_nodelay), value: 1)
                    try options.setOption(.socketOption(.so_keepalive), value: 1)
                    try options.setOption(.allowRemoteHalfClosure, value: tls == nil)
                    metrics.connectionAccepted(listener: listenerName)
                    let peer = ClientAddress.ip(of: channel.remoteAddress)
                    if let rejection = limiter.admit(peer) {
                        // Refused before any TLS work: the cheapest answer to a flood.
                        metrics.limitRejected(rejection)
                        channel.close(promise: nil)
                        return
                    }
                    active.increment()
                    channel.closeFuture.whenComplete { _ in
                        limiter.release(peer)
                        active.decrement()
                    }
                    let sync = channel.pipeline.syncOperations
                    if let tls, let handshakeTimeout {
                        try sync.addHandler(NIOSSLServerHandler(context: tls))
                        try sync.addHandler(TLSHandshakeTimeoutHandler(timeout: handshakeTimeout) {
                            metrics.tlsHandshakeFailed(listener: listenerName)
                        })
                    }
                    try HTTPGatewayHandler.install(on: sync, configuration: httpConfiguration, routes: routes, services: services)
                }
            }
        do {
            return try await bootstrap.bind(host: listener.address.host, port: listener.address.port).get()
        } catch {
            throw ConfigError(path: "listeners[\(index)].address", message: "cannot listen on \(listener.address): \(error)")
        }
    }

    /// Stops accepting, sends every live WebSocket a close (1001), and waits up to
    /// `drainTimeout` for them to finish.
    public func shutdown(drainTimeout: Duration = .seconds(5)) async {
        phaseValue.store(Phase.draining.rawValue, ordering: .releasing)
        let servers = self.servers.withLockedValue { value in defer { value = [] }; return value }
        for channel in servers { try? await channel.close() }
        registry.closeAll(code: CloseCode.goingAway, reason: "gateway shutting down")
        let deadline = ContinuousClock.now + drainTimeout
        while registry.count > 0 && ContinuousClock.now < deadline {
            try? await Task.sleep(for: .milliseconds(20))
        }
        services.withLockedValue { $0 }?.pool.closeAll()
        let echoes = echoBackends.withLockedValue { value in defer { value = [] }; return value }
        for echo in echoes { await echo.stop() }
        let admin = adminServer.withLockedValue { value in defer { value = nil }; return value }
        await admin?.stop()
        phaseValue.store(Phase.stopped.rawValue, ordering: .releasing)
    }

    /// Runs until graceful shutdown is requested (SIGTERM/SIGINT through the service group).
    public func run() async throws {
        try await start()
        try? await gracefulShutdown()
        logger.notice("shutting down")
        await shutdown()
    }
}

