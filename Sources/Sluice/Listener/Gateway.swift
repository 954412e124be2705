import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL
import ServiceLifecycle
import SluiceConfig

/// The running gateway: every listener of one configuration, the built-in backends, and the
/// registry of live WebSockets. A `Service`, so SIGTERM/SIGINT stop it cleanly.
public final class Gateway: Service, Sendable {
    /// What `start()` bound, for logs and tests.
    public struct BoundListener: Sendable {
        public var name: String
        public var address: SocketAddress
        public var tls: Bool
    }

    public let configuration: Configuration
    public let registry = ConnectionRegistry()
    private let group: any EventLoopGroup
    private let logger: Logger
    private let servers = NIOLockedValueBox<[any Channel]>([])
    private let echoBackends = NIOLockedValueBox<[EchoBackend]>([])

    public init(configuration: Configuration, group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton, logger: Logger) {
        self.configuration = configuration
        self.group = group
        self.logger = logger
    }

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
        let routes = try Self.makeRoutes(configuration, builtinPorts: builtinPorts)
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
            let channel = try await bind(listener, index: index, tls: tlsContext, routes: RouteTable(routes: routes, listener: listener.name))
            servers.withLockedValue { $0.append(channel) }
            if let address = channel.localAddress {
                bound.append(BoundListener(name: listener.name, address: address, tls: tlsContext != nil))
                logger.notice("listening", metadata: ["listener": "\(listener.name)", "address": "\(address)", "tls": "\(tlsContext != nil)"])
            }
        }
        return bound
    }

    /// Builds the runtime routes (backend sets, TLS contexts) of a configuration.
    static func makeRoutes(_ configuration: Configuration, builtinPorts: [BackendURL.Builtin: Int]) throws(ConfigError) -> [Route] {
        var routes: [Route] = []
        for (index, route) in configuration.routes.enumerated() {
            let backends = route.backends.isEmpty ? nil : try BackendSet.make(for: route, routeIndex: index, builtinPorts: builtinPorts)
            routes.append(Route(configuration: route, backends: backends))
        }
        return routes
    }

    private func bind(_ listener: ListenerConfiguration, index: Int, tls: NIOSSLContext?, routes: RouteTable) async throws -> any Channel {
        let registry = self.registry
        let logger = self.logger
        let handshakeTimeout = listener.tls.map { TimeAmount($0.handshakeTimeout) }
        let httpConfiguration = HTTPGatewayHandler.Configuration(listener: listener.name, tls: tls != nil, limits: listener.http)
        let bootstrap = ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: Int32(listener.backlog))
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .childChannelOption(.socketOption(.so_keepalive), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    let sync = channel.pipeline.syncOperations
                    if let tls, let handshakeTimeout {
                        try sync.addHandler(NIOSSLServerHandler(context: tls))
                        try sync.addHandler(TLSHandshakeTimeoutHandler(timeout: handshakeTimeout))
                    }
                    let decoder = ByteToMessageHandler(HTTPRequestDecoder(leftOverBytesStrategy: .forwardBytes))
                    let encoder = HTTPResponseEncoder()
                    try sync.addHandler(encoder)
                    try sync.addHandler(decoder)
                    try sync.addHandler(HTTPGatewayHandler(
                        configuration: httpConfiguration, routes: routes, registry: registry, logger: logger,
                        decoder: decoder, encoder: encoder
                    ))
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
        let servers = self.servers.withLockedValue { value in defer { value = [] }; return value }
        for channel in servers { try? await channel.close() }
        registry.closeAll(code: CloseCode.goingAway, reason: "gateway shutting down")
        let deadline = ContinuousClock.now + drainTimeout
        while registry.count > 0 && ContinuousClock.now < deadline {
            try? await Task.sleep(for: .milliseconds(20))
        }
        let echoes = echoBackends.withLockedValue { value in defer { value = [] }; return value }
        for echo in echoes { await echo.stop() }
    }

    /// Runs until graceful shutdown is requested (SIGTERM/SIGINT through the service group).
    public func run() async throws {
        try await start()
        try? await gracefulShutdown()
        logger.notice("shutting down")
        await shutdown()
    }
}

