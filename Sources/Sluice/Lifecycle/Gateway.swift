import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import NIOSSL
import ServiceLifecycle
import SluiceConfig
import Synchronization

/// The running gateway: the listeners of the live configuration, the built-in backends, the
/// admin listener, and what outlives any one configuration — the registry of live WebSockets,
/// the metrics, the access log, the limits' counts.
///
/// `start()` brings it up in order; `reload(to:)` replaces the configuration without touching
/// a live WebSocket (each keeps the `Route` it was admitted under); `drain(code:)` ends it
/// gently. The long-running parts run as services in one `ServiceGroup` (`services(...)`).
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

    /// What a successful reload changed.
    public struct ReloadReport: Sendable, Equatable {
        public var version: String
        public var added: [String]
        public var removed: [String]
        public var kept: [String]
    }

    /// Why a reload was refused; the old configuration stays in force.
    public struct ReloadFailure: Error, Sendable, CustomStringConvertible {
        public var errors: [ConfigError]
        public var description: String { errors.map(\.description).joined(separator: "\n") }
    }

    /// What a configuration runs as, replaced whole by a reload.
    private struct Live: Sendable {
        var configuration: Configuration
        var routes: [Route]
        var listeners: [LiveListener]
        var admin: AdminServer?
        var echo: EchoBackend?
        var adminToken: String?
    }

    public var configuration: Configuration { live.withLockedValue { $0.configuration } }
    public let registry = ConnectionRegistry()
    public let metrics = GatewayMetrics()
    let services: GatewayServices
    let logger: Logger
    private let group: any EventLoopGroup
    private let logLevel: LogLevelControl?
    let notifier: ServiceManagerNotifier
    private let live: NIOLockedValueBox<Live>
    private let phaseValue = Atomic<UInt8>(Phase.starting.rawValue)
    private let reloads = ReloadQueue()
    /// The close code live WebSockets get when the drain reaches them (1001, or 1012 when the
    /// operator says the instance restarts).
    private let drainCode = Atomic<UInt16>(CloseCode.goingAway)
    /// Asks the process to shut down (the service group's graceful shutdown); set by `sluice run`.
    private let shutdownTrigger = NIOLockedValueBox<(@Sendable () -> Void)?>(nil)
    /// Wall-clock time of the last successful reload (or start), for `/readyz` and metrics.
    private let lastLoaded = NIOLockedValueBox<Double>(0)
    /// The watched files as they were when the configuration in force was read: the file
    /// watch starts from these, so a change made meanwhile is not missed.
    private let loadedFiles: NIOLockedValueBox<[String: FileWatcher.Stamp?]>

    public init(
        configuration: Configuration, group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton, logger: Logger,
        logLevel: LogLevelControl? = nil, notifier: ServiceManagerNotifier = ServiceManagerNotifier(environment: [:])
    ) {
        self.group = group
        self.logger = logger
        self.logLevel = logLevel
        self.notifier = notifier
        services = GatewayServices(registry: registry, metrics: metrics, accessLog: AccessLog(), limits: configuration.limits, logger: logger)
        live = NIOLockedValueBox(Live(configuration: configuration, routes: [], listeners: []))
        loadedFiles = NIOLockedValueBox(FileWatcher.stamps(Self.watchedFiles(configuration)))
    }

    /// The files a change of which reloads (with `reload.watch`): the configuration file and
    /// every file it names.
    static func watchedFiles(_ configuration: Configuration) -> [String] {
        (configuration.sourceFile.map { [$0] } ?? []) + configuration.referencedFiles
    }

    /// A watcher starting from the files as they were when the configuration in force was read.
    func fileWatcher() -> FileWatcher {
        FileWatcher(settled: loadedFiles.withLockedValue { $0 })
    }

    public var phase: Phase { Phase(rawValue: phaseValue.load(ordering: .acquiring)) ?? .stopped }

    /// Open client TCP connections counted by `limits.max_connections` (for tests and admin).
    public var openConnections: Int { services.connectionLimiter.total }

    /// `true` when no route holds a count for any connection: every lease came back.
    public var limitCountersAreIdle: Bool {
        live.withLockedValue { $0.routes }.allSatisfy { $0.limiter.isIdle } && openConnections == 0
            && services.connectionLimiter.trackedAddresses == 0
    }

    /// The admin listener's address, once bound.
    public var adminAddress: SocketAddress? { live.withLockedValue { $0.admin?.address } }

    /// The live configuration's version (a hash of its text).
    public var configurationVersion: String { live.withLockedValue { $0.configuration.version } }

    var adminToken: String? { live.withLockedValue { $0.adminToken } }

    /// The routes in force.
    var currentRoutes: [Route] { live.withLockedValue { $0.routes } }

    /// The listeners in force, with their bound addresses.
    var currentListeners: [LiveListener] { live.withLockedValue { $0.listeners } }

    /// The shutdown settings in force (a backend drain spreads its closes like a shutdown).
    var shutdownSettings: ShutdownConfiguration { live.withLockedValue { $0.configuration.shutdown } }

    /// Current routes, for the limit gauges.
    func updateLimitMetrics() {
        let routes = live.withLockedValue { $0.routes }
        metrics.updateLimits(routes: routes, connections: services.connectionLimiter)
        for set in Self.backendSets(routes) { set.publishMetrics() }
    }

    /// The distinct backend sets of `routes` (a set kept by a reload appears once).
    static func backendSets(_ routes: [Route]) -> [BackendSet] {
        var seen = Set<ObjectIdentifier>()
        return routes.compactMap(\.backends).filter { seen.insert(ObjectIdentifier($0)).inserted }
    }

    /// Starts the active checks of the sets in `routes` that `previous` did not have, and stops
    /// those of the sets that left.
    private func switchBackendSets(to routes: [Route], from previous: [Route]) {
        let old = Self.backendSets(previous)
        let new = Self.backendSets(routes)
        let oldIDs = Set(old.map(ObjectIdentifier.init))
        let newIDs = Set(new.map(ObjectIdentifier.init))
        let observer = BackendObserver(registry: metrics.registry, logger: logger)
        for set in new where !oldIDs.contains(ObjectIdentifier(set)) {
            if let before = previous.first(where: { $0.name == set.routeName })?.backends { set.inherit(from: before) }
            set.start(observer: observer, group: group)
            observer.publish(set)
        }
        for set in old where !newIDs.contains(ObjectIdentifier(set)) { set.stop() }
    }

    /// Stops every active check (the gateway stops).
    func stopBackendChecks() {
        for set in Self.backendSets(live.withLockedValue { $0.routes }) { set.stop() }
    }

    // MARK: Start

    /// Generates the development certificate where asked, starts the built-in backends, builds
    /// the routes, binds the admin listener and every listener. Errors name the config key.
    @discardableResult
    public func start() async throws -> [BoundListener] {
        let configuration = self.configuration
        logLevel.map { if !$0.isOverridden { $0.level = Logger.Level(rawValue: configuration.logLevel.rawValue) ?? .info } }
        try generateDevelopmentCertificates(configuration)
        let echo = Self.needsEcho(configuration) ? try await EchoBackend.start(group: group) : nil
        do {
            try services.accessLog.point(to: configuration.accessLog)
        } catch {
            throw ConfigError(path: "access_log", message: error.description)
        }
        let routes = try await Self.makeRoutes(configuration, builtinPorts: echo.map { [.echo: $0.port] } ?? [:], metrics: metrics)
        for warning in ConfigurationWarnings.compute(configuration) { logger.warning("\(warning)") }
        let token = try Self.readToken(configuration.admin)
        if let cluster = configuration.cluster {
            let store = try ClusterStore.make(cluster, eventLoop: group.next(), metrics: metrics, registry: registry, logger: logger)
            services.setCluster(store)
            store.start()
            logger.notice("cluster store", metadata: ["redis": "\(cluster.redis)", "instance": "\(cluster.instanceID)", "on_store_failure": "\(cluster.onStoreFailure.rawValue)"])
        }
        do {
            return try await startListeners(configuration, routes: routes, echo: echo, token: token)
        } catch {
            // Nothing will drain this gateway: its cluster store must not go on heartbeating.
            await services.cluster?.stop()
            throw error
        }
    }

    /// The part of `start` after the routes and the cluster store: the admin listener and every
    /// listener, then readiness.
    private func startListeners(_ configuration: Configuration, routes: [Route], echo: EchoBackend?, token: String?) async throws -> [BoundListener] {
        live.withLockedValue {
            $0.routes = routes
            $0.echo = echo
            $0.adminToken = token
        }
        switchBackendSets(to: routes, from: [])
        if let admin = configuration.admin {
            let server = try await AdminServer.start(configuration: admin, gateway: self, group: group, logger: logger)
            live.withLockedValue { $0.admin = server }
            logger.notice("admin listening", metadata: ["address": "\(LiveListener.describe(server.address))"])
        }
        var listeners: [LiveListener] = []
        for (index, listener) in configuration.listeners.enumerated() {
            let tls = try makeTLSContext(listener, index: index, log: true)
            let bound = try await LiveListener.bind(
                listener, index: index, tls: tls, routing: ListenerRouting(Self.routing(for: listener.name, routes: routes, configuration)),
                services: services, group: group
            )
            listeners.append(bound)
            logger.notice("listening", metadata: ["listener": "\(listener.name)", "address": "\(bound.address)", "tls": "\(tls != nil)"])
        }
        live.withLockedValue { $0.listeners = listeners }
        lastLoaded.withLockedValue { $0 = Date().timeIntervalSince1970 }
        metrics.configurationLoaded(version: configuration.version, at: Date().timeIntervalSince1970)
        logger.notice("configuration in force", metadata: ["version": "\(configuration.version)", "file": "\(configuration.sourceFile ?? "(inline)")"])
        phaseValue.store(Phase.ready.rawValue, ordering: .releasing)
        return listeners.compactMap { listener in
            listener.channel.localAddress.map { BoundListener(name: listener.name, address: $0, tls: listener.configuration.tls != nil) }
        }
    }

    private func generateDevelopmentCertificates(_ configuration: Configuration) throws {
        for listener in configuration.listeners {
            for certificate in listener.tls?.certificates ?? [] where try DevCertificate.generateIfMissing(certificate) {
                logger.notice("generated a development certificate", metadata: ["cert": "\(certificate.certificateFile)", "key": "\(certificate.keyFile)"])
            }
        }
    }

    static func needsEcho(_ configuration: Configuration) -> Bool {
        configuration.routes.contains { route in route.backends.contains { $0.target == .builtin(.echo) } }
    }

    static func readToken(_ admin: AdminConfiguration?) throws(ConfigError) -> String? {
        guard let file = admin?.tokenFile else { return nil }
        do {
            let token = try String(contentsOfFile: file, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
            guard token.count >= 16 else { throw ConfigError(path: "admin.token_file", message: "the token in \(file) is shorter than 16 characters") }
            return token
        } catch let error as ConfigError {
            throw error
        } catch {
            throw ConfigError(path: "admin.token_file", message: "cannot read \(file): \(error.localizedDescription)")
        }
    }

    /// The TLS context of a listener, from its certificate files now.
    private func makeTLSContext(_ listener: ListenerConfiguration, index: Int, log: Bool) throws(ConfigError) -> LiveListener.TLS? {
        guard let tls = listener.tls else { return nil }
        let store = try CertificateStore(configuration: tls)
        if log {
            for entry in store.entries {
                logger.info("certificate loaded", metadata: ["listener": "\(listener.name)", "names": "\(entry.names.joined(separator: ","))", "sha256": "\(entry.fingerprint)"])
            }
        }
        do {
            let context = try NIOSSLContext(configuration: store.serverConfiguration(
                minimumVersion: tls.minimumVersion, applicationProtocols: listener.httpVersions.map(\.rawValue)
            ))
            return LiveListener.TLS(context: context, fingerprints: store.entries.map(\.fingerprint))
        } catch {
            throw ConfigError(path: "listeners[\(index)].tls", message: "cannot build the TLS context: \(error)")
        }
    }

    static func routing(for listener: String, routes: [Route], _ configuration: Configuration) -> ListenerRouting.Snapshot {
        ListenerRouting.Snapshot(routes: RouteTable(routes: routes, listener: listener), trustedProxies: configuration.limits.trustedProxies)
    }

    /// Builds the runtime routes of a configuration. A route whose name was in `previous` keeps
    /// its limiter (live counts, rate buckets) and, if its backends did not change, its backend
    /// set (balancing position, failure counts).
    static func makeRoutes(
        _ configuration: Configuration, builtinPorts: [BackendURL.Builtin: Int], metrics: GatewayMetrics? = nil, previous: [Route] = []
    ) async throws(ConfigError) -> [Route] {
        var identityHeaders: Set<String> = ["x-sluice-user"]
        for route in configuration.routes {
            identityHeaders.insert(route.auth.userHeader.lowercased())
            for case .forward(let forward) in route.auth.methods {
                identityHeaders.formUnion(forward.copyHeaders.map { $0.lowercased() })
            }
        }
        let before = Dictionary(previous.map { ($0.name, $0) }, uniquingKeysWith: { first, _ in first })
        var routes: [Route] = []
        for (index, route) in configuration.routes.enumerated() {
            let old = before[route.name]
            var backends: BackendSet?
            if let old, let set = old.backends, old.configuration.sharesBackendSet(with: route) {
                backends = set
            } else if !route.backends.isEmpty {
                backends = try BackendSet.make(for: route, routeIndex: index, builtinPorts: builtinPorts)
            }
            let authenticator = route.auth.isPublic
                ? nil : try await RouteAuthenticator(configuration: route.auth, routeIndex: index, threadPool: .singleton)
            routes.append(Route(
                configuration: route, backends: backends, metrics: metrics?.route(route.name),
                authenticator: authenticator, identityHeaders: identityHeaders, limiter: old?.limiter
            ))
        }
        return routes
    }

    // MARK: Reload

    /// Reads the configuration file again (the one it was loaded from) and reloads to it.
    public func reloadFromFile() async -> Result<ReloadReport, ReloadFailure> {
        guard let file = configuration.sourceFile else {
            return .failure(ReloadFailure(errors: [ConfigError(path: "", message: "this gateway was not started from a file; nothing to reload")]))
        }
        // The files' stamps before reading them: a change made while (or after) they are read
        // is seen by the watch.
        let before = FileWatcher.stamps(Self.watchedFiles(configuration))
        let loaded: Configuration
        do {
            loaded = try ConfigurationLoader.load(file: file)
        } catch {
            loadedFiles.withLockedValue { $0 = before }
            let failure = ReloadFailure(errors: error.errors)
            refused(failure)
            return .failure(failure)
        }
        let result = await reload(to: loaded)
        let files = Self.watchedFiles(loaded)
        loadedFiles.withLockedValue { stamps in
            stamps = FileWatcher.stamps(files)
            for (file, stamp) in before where stamps[file] != nil { stamps[file] = stamp }
        }
        return result
    }

    /// Puts `new` in force, or refuses it with the old one kept. Everything that can fail is
    /// done before anything changes: certificates, routes (auth files, backend TLS), the admin
    /// token, the access log, and binding added listeners. Live WebSockets keep the routes they
    /// were admitted under; kept-alive HTTP connections see the new routes at their next
    /// request; listeners whose address did not change keep their sockets; removed ones drain.
    /// Reloads run one at a time.
    public func reload(to new: Configuration) async -> Result<ReloadReport, ReloadFailure> {
        await reloads.run { await self.reloadNow(to: new) }
    }

    private func reloadNow(to new: Configuration) async -> Result<ReloadReport, ReloadFailure> {
        guard phase == .ready else {
            return .failure(ReloadFailure(errors: [ConfigError(path: "", message: "the gateway is \(phase), not ready; not reloaded")]))
        }
        notifier.reloading()
        defer { notifier.notify("READY=1\nSTATUS=configuration \(configurationVersion)") }
        let old = live.withLockedValue { $0 }
        var errors: [ConfigError] = []
        // Certificates and TLS contexts, for every TLS listener.
        do {
            try generateDevelopmentCertificates(new)
        } catch {
            errors.append(ConfigError(path: "listeners", message: "cannot generate the development certificate: \(error)"))
        }
        var contexts: [String: LiveListener.TLS] = [:]
        for (index, listener) in new.listeners.enumerated() {
            do throws(ConfigError) {
                if let context = try makeTLSContext(listener, index: index, log: false) { contexts[listener.name] = context }
            } catch {
                errors.append(error)
            }
        }
        // The built-in echo backend, started if this configuration is the first to need it.
        var echo = old.echo
        if echo == nil && Self.needsEcho(new) {
            do {
                echo = try await EchoBackend.start(group: group)
            } catch {
                errors.append(ConfigError(path: "routes", message: "cannot start the built-in echo backend: \(error)"))
            }
        }
        var routes: [Route] = []
        if errors.isEmpty {
            do throws(ConfigError) {
                routes = try await Self.makeRoutes(new, builtinPorts: echo.map { [.echo: $0.port] } ?? [:], metrics: metrics, previous: old.routes)
            } catch {
                errors.append(error)
            }
        }
        if new.cluster != old.configuration.cluster {
            errors.append(ConfigError(path: "cluster", message: "the cluster block takes effect at a restart only; put it back as it was to reload the rest"))
        }
        var token: String?
        do throws(ConfigError) {
            token = try Self.readToken(new.admin)
        } catch {
            errors.append(error)
        }
        if new.accessLog != old.configuration.accessLog, case .file(let path) = new.accessLog, !FileManager.default.isWritableFile(atPath: path),
            FileManager.default.fileExists(atPath: path) || !FileManager.default.isWritableFile(atPath: (path as NSString).deletingLastPathComponent)
        {
            errors.append(ConfigError(path: "access_log", message: "cannot write \(path)"))
        }
        if !errors.isEmpty {
            if echo !== old.echo { await echo?.stop() }
            let failure = ReloadFailure(errors: errors)
            refused(failure)
            return .failure(failure)
        }
        // Listeners: the same name and address keep their socket; others bind now.
        var kept: [(LiveListener, ListenerConfiguration)] = []
        var added: [LiveListener] = []
        var remaining = old.listeners
        for (index, listener) in new.listeners.enumerated() {
            if let match = remaining.firstIndex(where: { $0.name == listener.name && $0.configuration.address == listener.address })
                ?? remaining.firstIndex(where: { $0.configuration.address == listener.address && $0.configuration.address.port != 0 })
            {
                kept.append((remaining.remove(at: match), listener))
                continue
            }
            do throws(ConfigError) {
                added.append(try await LiveListener.bind(
                    listener, index: index, tls: contexts[listener.name],
                    routing: ListenerRouting(Self.routing(for: listener.name, routes: routes, new)), services: services, group: group
                ))
            } catch {
                errors.append(error)
                break
            }
        }
        if !errors.isEmpty {
            for listener in added { try? await listener.channel.close() }
            if echo !== old.echo { await echo?.stop() }
            let failure = ReloadFailure(errors: errors)
            refused(failure)
            return .failure(failure)
        }
        // Nothing can fail from here: put it in force.
        for (listener, configuration) in kept {
            listener.update(configuration: configuration, tls: contexts[configuration.name], routing: Self.routing(for: configuration.name, routes: routes, new))
        }
        try? services.accessLog.point(to: new.accessLog)
        services.connectionLimiter.update(new.limits)
        if let control = logLevel, !control.isOverridden { control.level = Logger.Level(rawValue: new.logLevel.rawValue) ?? control.level }
        if new.admin?.address != old.configuration.admin?.address {
            logger.warning("admin.address changes take effect at the next start; the admin listener stays where it is")
        }
        let removed = remaining
        switchBackendSets(to: routes, from: old.routes)
        live.withLockedValue { live in
            live.configuration = new
            live.routes = routes
            live.listeners = kept.map(\.0) + added
            live.echo = echo
            live.adminToken = token
        }
        for listener in removed { drainRemoved(listener, settings: new.shutdown) }
        for listener in added {
            logger.notice("listening", metadata: ["listener": "\(listener.name)", "address": "\(listener.address)", "tls": "\(contexts[listener.name] != nil)"])
        }
        let now = Date().timeIntervalSince1970
        lastLoaded.withLockedValue { $0 = now }
        metrics.reloaded(success: true)
        metrics.configurationLoaded(version: new.version, at: now)
        let report = ReloadReport(version: new.version, added: added.map(\.name), removed: removed.map(\.name), kept: kept.map(\.0.name))
        logger.notice("configuration reloaded", metadata: [
            "version": "\(new.version)", "added": "\(report.added)", "removed": "\(report.removed)", "routes": "\(routes.count)",
        ])
        return .success(report)
    }

    private func refused(_ failure: ReloadFailure) {
        metrics.reloaded(success: false)
        logger.error("configuration refused; the old one stays in force", metadata: ["errors": "\(failure.description)"])
    }

    /// A listener the reload removed: stop accepting at once and drain its connections.
    private func drainRemoved(_ listener: LiveListener, settings: ShutdownConfiguration) {
        logger.notice("listener removed; draining", metadata: ["listener": "\(listener.name)", "address": "\(listener.address)"])
        let procedure = DrainProcedure(settings, announced: false, clock: ContinuousClock())
        let steps = drainSteps(listeners: [listener], code: CloseCode.goingAway, matching: { $0.listener == listener.name }, announce: {})
        Task { _ = await procedure.run(steps) }
    }

    // MARK: Drain

    /// Says the instance is restarting: live WebSockets will get 1012 instead of 1001.
    public func setDrainCode(_ code: UInt16) {
        drainCode.store(code, ordering: .relaxed)
    }

    /// How `sluice run` asks its service group to shut down (for `POST /drain`).
    public func onShutdownRequest(_ trigger: @escaping @Sendable () -> Void) {
        shutdownTrigger.withLockedValue { $0 = trigger }
    }

    /// `POST /drain`: shut the whole instance down gently with `code` (1001 or 1012).
    func requestDrain(code: UInt16) {
        setDrainCode(code)
        requestShutdown()
    }

    /// SIGTERM, SIGINT, `POST /drain`: with a service group the group is asked (it runs the
    /// drain); without one, the drain runs here.
    public func requestShutdown() {
        if let trigger = shutdownTrigger.withLockedValue({ $0 }) {
            trigger()
        } else {
            Task { await self.drain() }
        }
    }

    /// The drain of the whole gateway (see `DrainProcedure`); then the backend pool stops, and,
    /// unless services stop them in their turn, the admin listener and the built-in backends.
    public func drain<C: Clock>(clock: C = ContinuousClock(), stoppingParts: Bool = true) async where C.Duration == Duration {
        guard phaseValue.compareExchange(expected: Phase.ready.rawValue, desired: Phase.draining.rawValue, ordering: .acquiringAndReleasing).exchanged else { return }
        let listeners = live.withLockedValue { $0.listeners }
        let code = drainCode.load(ordering: .relaxed)
        let settings = configuration.shutdown
        logger.notice("draining", metadata: [
            "readiness_delay": "\(settings.readinessDelay)", "drain_window": "\(settings.drainWindow)", "close_code": "\(code)",
            "websockets": "\(registry.count)",
        ])
        let steps = drainSteps(listeners: listeners, code: code, matching: { _ in true }) { [notifier] in
            notifier.notify("STOPPING=1")
        }
        let outcome = await DrainProcedure(settings, clock: clock).run(steps)
        if outcome.forced > 0 { logger.warning("drain deadline reached; connections closed", metadata: ["connections": "\(outcome.forced)"]) }
        services.pool.closeAll()
        stopBackendChecks()
        await services.cluster?.stop()
        if stoppingParts {
            await stopAdmin()
            await stopBuiltins()
        }
        phaseValue.store(Phase.stopped.rawValue, ordering: .releasing)
        logger.notice("drained", metadata: ["closed_at_deadline": "\(outcome.forced)"])
    }

    /// Stops the admin listener (after the drain: `/readyz` answers 503 throughout it).
    func stopAdmin() async {
        let admin = live.withLockedValue { live in defer { live.admin = nil }; return live.admin }
        await admin?.stop()
    }

    /// Stops the built-in backends (last: relays to them end during the drain).
    func stopBuiltins() async {
        let echo = live.withLockedValue { live in defer { live.echo = nil }; return live.echo }
        await echo?.stop()
    }

    func drainSteps(
        listeners: [LiveListener], code: UInt16, reason: String? = nil, matching: @escaping @Sendable (ConnectionInfo) -> Bool,
        announce: @escaping @Sendable () -> Void
    ) -> DrainSteps {
        let registry = self.registry
        let chosen = NIOLockedValueBox<Set<UInt64>>([])
        return .init(
            announce: announce,
            stopAccepting: { for listener in listeners { await listener.stopAccepting() } },
            closeWebSockets: { window in
                let ids = registry.ids(matching: matching)
                chosen.withLockedValue { $0 = Set(ids) }
                var generator = SystemRandomNumberGenerator()
                let reason = reason ?? (code == CloseCode.serviceRestart ? "gateway restarting" : "gateway shutting down")
                registry.scheduleCloses(ids, after: DrainSchedule.offsets(count: ids.count, window: window, using: &generator), code: code, reason: reason)
            },
            remaining: {
                registry.count(of: chosen.withLockedValue { $0 }) + listeners.reduce(0) { $0 + $1.openConnections }
            },
            forceClose: {
                registry.abort(chosen.withLockedValue { $0 })
                for listener in listeners { listener.closeAll() }
            }
        )
    }

    /// A quick shutdown for tests: every live WebSocket gets a close (1001) at once, then up to
    /// `drainTimeout` for them to finish.
    public func shutdown(drainTimeout: Duration = .seconds(5)) async {
        var settings = ShutdownConfiguration()
        settings.readinessDelay = .zero
        settings.drainWindow = .zero
        settings.deadline = drainTimeout
        live.withLockedValue { $0.configuration.shutdown = settings }
        if phase == .starting { phaseValue.store(Phase.ready.rawValue, ordering: .releasing) }
        await drain()
    }

    /// Runs until graceful shutdown is requested, then drains (tests and simple embedders; the
    /// `sluice` command runs the parts as services instead).
    public func run() async throws {
        try await start()
        try? await gracefulShutdown()
        await drain()
    }
}

/// Runs reloads one after another: a second waits for the first to finish.
private actor ReloadQueue {
    private var running = false
    private var waiting: [CheckedContinuation<Void, Never>] = []

    func run<T: Sendable>(_ body: @Sendable () async -> T) async -> T {
        if running {
            await withCheckedContinuation { waiting.append($0) }
        }
        running = true
        let result = await body()
        if waiting.isEmpty {
            running = false
        } else {
            waiting.removeFirst().resume()
        }
        return result
    }
}
