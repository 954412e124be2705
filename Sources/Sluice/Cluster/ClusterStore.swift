import CoreMetrics
import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOSSL
import SluiceConfig

/// This instance's part in a cluster of Sluice instances sharing one Redis: WebSocket caps per
/// route and per user and rate limits per address and per user that hold across instances,
/// kicks that reach every instance, and a view of every instance's live WebSockets.
///
/// One round trip per upgrade and one per close (`ClusterScripts`); a heartbeat every third
/// of `lease_ttl` renews this instance's leases, so the leases of an instance that dies lapse
/// by themselves. Redis slow or down never blocks an event loop: each call has its timeout,
/// `on_store_failure` decides, local limits still hold, and once Redis answers again the
/// instance's leases are reconciled from its own table (`ClusterLeaseTable`).
///
/// Its state lives on `eventLoop`, the loop of its Redis connections.
final class ClusterStore: @unchecked Sendable {
    /// What an upgrade or request is checked against.
    struct Check: Sendable {
        var route: String
        var limits: RouteLimits
        var user: String?
        var ip: IPAddress
    }

    /// What the cluster view shows of a WebSocket (taken at admission).
    struct Summary: Sendable {
        var connectionID: UInt64
        var listener: String
        var client: String
    }

    let configuration: ClusterConfiguration
    let eventLoop: any EventLoop
    private let client: RedisClient
    private let subscriber: RedisClient
    private let metrics: GatewayMetrics
    private let registry: ConnectionRegistry
    private let logger: Logger
    private var table = ClusterLeaseTable()
    private var heartbeat: RepeatedTask?
    private var beating = false
    private let prefix: String
    private var instance: String { configuration.instanceID }
    private var ttlMilliseconds: Int64 { configuration.leaseTTL.components.seconds * 1000 + configuration.leaseTTL.components.attoseconds / 1_000_000_000_000_000 }
    /// Round trips to Redis by operation (`sluice_cluster_store_calls_total`), made once.
    private let calls: [Operation: CoreMetrics.Counter]
    /// How long each answered call took (`sluice_cluster_store_call_seconds`): what the cluster
    /// adds to an upgrade is exactly its `admit` call.
    private let durations: [Operation: CoreMetrics.Timer]
    /// The bound on the calls that carry the whole table or the whole view.
    static let bulkTimeout: TimeAmount = .seconds(2)

    init(configuration: ClusterConfiguration, password: String?, tls: NIOSSLContext?, eventLoop: any EventLoop,
         metrics: GatewayMetrics, registry: ConnectionRegistry, logger: Logger) {
        self.configuration = configuration
        self.eventLoop = eventLoop
        self.metrics = metrics
        self.registry = registry
        self.logger = logger
        prefix = configuration.keyPrefix
        calls = Dictionary(uniqueKeysWithValues: Operation.allCases.map { ($0, metrics.counter("sluice_cluster_store_calls_total", [("operation", $0.rawValue)])) })
        durations = Dictionary(uniqueKeysWithValues: Operation.allCases.map {
            ($0, CoreMetrics.Timer(label: "sluice_cluster_store_call_seconds", dimensions: [("operation", $0.rawValue)], factory: metrics.factory))
        })
        let address = configuration.redis
        let endpoint = RedisClient.Endpoint(
            host: address.host, port: address.port, database: address.database, username: address.username, password: password,
            tls: tls, serverName: IPAddressText.isIPv4(address.host) || IPAddressText.isIPv6(address.host) ? nil : address.host,
            timeout: TimeAmount(configuration.timeout)
        )
        client = RedisClient(endpoint: endpoint, eventLoop: eventLoop, logger: logger)
        subscriber = RedisClient(endpoint: endpoint, mode: .subscriber([configuration.keyPrefix + ":kick"]), eventLoop: eventLoop, logger: logger)
    }

    /// Connects, and keeps the heartbeat and the kick subscription going.
    func start() {
        client.onReady = { [self] in
            metrics.clusterStoreUp(true)
            table.markForReconcile()
            beat()
        }
        client.onLost = { [self] _ in
            metrics.clusterStoreUp(false)
            table.markForReconcile()
        }
        subscriber.onMessage = { [self] _, payload in kickReceived(payload) }
        client.start()
        subscriber.start()
        let period = TimeAmount.nanoseconds(TimeAmount(configuration.leaseTTL).nanoseconds / 3)
        eventLoop.execute { [self] in
            heartbeat = eventLoop.scheduleRepeatedTask(initialDelay: period, delay: period) { [self] _ in beat() }
        }
    }

    /// Leaves the cluster: what this instance still holds (nothing, after a drain) is written
    /// back first, so the others see its slots free now rather than after `lease_ttl`.
    func stop() async {
        try? await eventLoop.flatSubmit { [self] in
            heartbeat?.cancel()
            table.markForReconcile()
            return beat(force: true).flatMap { [self] in
                client.isConnected ? client.send(["ZREM", Keys.instances(prefix), instance]).map { _ in }.recover { _ in } : eventLoop.makeSucceededVoidFuture()
            }
        }.get()
        try? await client.stop().get()
        try? await subscriber.stop().get()
    }

    // MARK: Admission

    /// Takes a cluster lease for an upgrade `check` admits (one round trip): the lease, or the
    /// refusal — a cap or rate of the cluster, or Redis failing under `deny`.
    func admit(_ check: Check, summary: Summary) -> EventLoopFuture<Result<ClusterLease, SluiceError>> {
        onLoop { [self] in
            let plan = Plan(check, prefix: prefix, upgrade: true)
            let id = table.makeID(instance: instance)
            let record = plan.record(id: id, instance: instance, check: check, summary: summary)
            table.sent(id, record: record)
            return evaluate(ClusterScripts.admit, .admit, keys: plan.keys(prefix: prefix, instance: instance), arguments: plan.arguments(instance: instance, lease: id, ttl: ttlMilliseconds, record: record))
                .flatMapThrowing { [self] answer -> Result<ClusterLease, SluiceError> in
                    if let rejection = try plan.decision(answer, limits: check.limits) {
                        table.dropped(id, confirmedByRedis: true)
                        return .failure(.limited(rejection))
                    }
                    table.held(id, confirmedByRedis: true)
                    return .success(ClusterLease(id: id, store: self))
                }
                .flatMapErrorThrowing { [self] error in
                    storeFailed("admit", error)
                    if plan.limitsAnything && configuration.onStoreFailure == .deny {
                        table.dropped(id, confirmedByRedis: false)
                        metrics.clusterPolicyApplied(.deny)
                        return .failure(Self.unavailable)
                    }
                    if plan.limitsAnything { metrics.clusterPolicyApplied(.allow) }
                    table.held(id, confirmedByRedis: false)
                    return .success(ClusterLease(id: id, store: self))
                }
        }
    }

    /// Checks a plain request against the cluster's request rates (one round trip; none when the
    /// route has no such rate).
    func admitRequest(_ check: Check) -> EventLoopFuture<SluiceError?> {
        let plan = Plan(check, prefix: prefix, upgrade: false)
        guard plan.limitsAnything else { return eventLoop.makeSucceededFuture(nil) }
        return onLoop { [self] in
            evaluate(ClusterScripts.admit, .request, keys: plan.keys(prefix: prefix, instance: instance), arguments: plan.arguments(instance: instance, lease: "", ttl: ttlMilliseconds, record: ""))
                .flatMapThrowing { answer -> SluiceError? in
                    try plan.decision(answer, limits: check.limits).map { .limited($0) }
                }
                .flatMapErrorThrowing { [self] error in
                    storeFailed("request", error)
                    metrics.clusterPolicyApplied(configuration.onStoreFailure)
                    return configuration.onStoreFailure == .deny ? Self.unavailable : nil
                }
        }
    }

    /// Runs `body` on the store's event loop: at once when already there (one event loop for
    /// connections and store, as with `--event-loop-threads 1`), else as a task on it. A task
    /// would wait for the loop's next turn, which is what a handshake's tail latency is made of.
    private func onLoop<T: Sendable>(_ body: @escaping @Sendable () -> EventLoopFuture<T>) -> EventLoopFuture<T> {
        eventLoop.inEventLoop ? body() : eventLoop.flatSubmit(body)
    }

    static let unavailable = SluiceError(
        source: .gateway, status: .serviceUnavailable, label: .clusterUnavailable, message: "the cluster's limits cannot be checked now; retry later",
        headers: [("Retry-After", "1")]
    )

    /// Gives a lease back (one round trip); a release Redis does not confirm is made at the next
    /// reconciliation.
    fileprivate func release(_ id: String) {
        eventLoop.execute { [self] in
            guard table.entries[id] != nil else { return }
            table.dropped(id, confirmedByRedis: true)
            evaluate(ClusterScripts.release, .release, keys: [Keys.index(prefix, instance)], arguments: [id]).whenFailure { [self] error in
                storeFailed("release", error)
                table.markForReconcile()
            }
        }
    }

    // MARK: Heartbeat and reconciliation

    /// Renews this instance's leases, or reconciles them when the table says so; `force` goes
    /// ahead even while an earlier beat is on its way.
    @discardableResult
    private func beat(force: Bool = false) -> EventLoopFuture<Void> {
        guard client.isConnected, force || !beating else { return eventLoop.makeSucceededVoidFuture() }
        beating = true
        let keys = [Keys.index(prefix, instance), Keys.instances(prefix)]
        let reply: EventLoopFuture<RESPValue>
        let generation = table.generation
        let reconciling = table.needsReconcile
        if reconciling {
            let (keep, held) = table.reconcileArguments()
            var arguments = [instance, String(ttlMilliseconds), String(keep.count)] + keep
            for lease in held { arguments += [lease.id, lease.record] }
            reply = evaluate(ClusterScripts.reconcile, .reconcile, keys: keys, arguments: arguments, timeout: Self.bulkTimeout)
        } else {
            reply = renew(from: "0", keys: keys)
        }
        return reply.map { [self] answer in
            beating = false
            if reconciling {
                table.reconciled(at: generation)
                logger.info("cluster leases reconciled", metadata: ["leases": "\(answer.integer ?? -1)", "instance": "\(instance)"])
            }
        }.recover { [self] error in
            beating = false
            storeFailed(reconciling ? "reconcile" : "heartbeat", error)
            table.markForReconcile()
        }
    }

    /// Leases renewed per heartbeat call: a few hundred keep each call well under a millisecond
    /// of Redis's time.
    static let heartbeatBatch = 200

    /// Renews every lease, one batch per round trip, from `cursor` until Redis says it is done.
    private func renew(from cursor: String, keys: [String]) -> EventLoopFuture<RESPValue> {
        evaluate(ClusterScripts.heartbeat, .heartbeat, keys: keys, arguments: [instance, String(ttlMilliseconds), cursor, String(Self.heartbeatBatch)])
            .flatMapThrowing { answer -> String in
                guard let next = answer.string, UInt64(next) != nil else { throw RedisError.protocolViolation("the heartbeat answered \(answer)") }
                return next
            }
            .flatMap { [self] next in next == "0" ? eventLoop.makeSucceededFuture(RESPValue.integer(0)) : renew(from: next, keys: keys) }
    }

    // MARK: Kicks and the cluster view

    /// Publishes a kick to every other instance; the answer is how many instances heard it.
    func publishKick(user: String?, instance target: String?, id: UInt64?, code: UInt16, reason: String) -> EventLoopFuture<Int> {
        var fields = [#""from":\#(ConnectionJSON.quoted(instance))"#, #""code":\#(code)"#, #""reason":\#(ConnectionJSON.quoted(reason))"#]
        if let user { fields.append(#""user":\#(ConnectionJSON.quoted(user))"#) }
        if let target, let id { fields += [#""instance":\#(ConnectionJSON.quoted(target))"#, #""id":\#(id)"#] }
        calls[.kick]?.increment()
        return client.send(["PUBLISH", Keys.kickChannel(prefix), "{" + fields.joined(separator: ",") + "}"])
            .flatMapThrowing { answer in
                guard let count = answer.integer else { throw RedisError.protocolViolation("PUBLISH answered \(answer)") }
                return Int(count)
            }
            .flatMapErrorThrowing { [self] error in
                storeFailed("kick", error)
                throw error
            }
    }

    /// A kick from another instance: closes the matching WebSockets here.
    private func kickReceived(_ payload: [UInt8]) {
        guard let object = try? JSONSerialization.jsonObject(with: Data(payload)) as? [String: Any], object["from"] as? String != instance,
            let code = (object["code"] as? NSNumber)?.intValue, let close = UInt16(exactly: code), CloseCode.isSendable(close)
        else { return }
        let reason = String((object["reason"] as? String ?? "closed by operator").utf8.prefix(120)) ?? "closed by operator"
        let ids: [UInt64]
        if let user = object["user"] as? String {
            ids = registry.ids { $0.user == user }
        } else if object["instance"] as? String == instance, let id = (object["id"] as? NSNumber)?.uint64Value {
            ids = [id]
        } else {
            return
        }
        for id in ids { _ = registry.close(id: id, clientCode: close, backendCode: CloseCode.goingAway, reason: reason) }
        if !ids.isEmpty { logger.notice("kicked by another instance", metadata: ["from": "\(object["from"] ?? "")", "connections": "\(ids.count)"]) }
    }

    /// Every live instance's WebSockets, as JSON objects (the records taken at admission).
    func view() -> EventLoopFuture<[String]> {
        evaluate(ClusterScripts.view, .view, keys: [Keys.instances(prefix)], arguments: [prefix], timeout: Self.bulkTimeout)
            .flatMapThrowing { answer in
                guard let items = answer.array else { throw RedisError.protocolViolation("the view is not a list") }
                return items.compactMap(\.string)
            }
            .flatMapErrorThrowing { [self] error in
                storeFailed("view", error)
                throw error
            }
    }

    // MARK: Calls

    /// `EVALSHA`, falling back to `EVAL` (which caches the script) when Redis does not have it.
    /// What each call is for: the `operation` label of the call and error counters.
    enum Operation: String, CaseIterable {
        case admit, request, release, heartbeat, reconcile, view, kick
    }

    private func evaluate(
        _ script: ClusterScripts.Script, _ operation: Operation, keys: [String], arguments: [String], timeout: TimeAmount? = nil
    ) -> EventLoopFuture<RESPValue> {
        calls[operation]?.increment()
        let started = NIODeadline.now()
        let tail = [String(keys.count)] + keys + arguments
        let answer = client.send(["EVALSHA", script.sha] + tail, timeout: timeout).flatMapError { [client] error in
            if case RedisError.server(let message) = error, message.hasPrefix("NOSCRIPT") {
                return client.send(["EVAL", script.source] + tail, timeout: timeout)
            }
            return client.eventLoop.makeFailedFuture(error)
        }
        answer.whenSuccess { [durations] _ in durations[operation]?.recordNanoseconds((NIODeadline.now() - started).nanoseconds) }
        return answer
    }

    private func storeFailed(_ operation: String, _ error: any Error) {
        let reason = (error as? RedisError)?.label ?? "other"
        metrics.clusterStoreError(operation: operation, reason: reason)
        logger.warning("cluster store call failed", metadata: ["operation": "\(operation)", "error": "\(error)"])
    }
}

/// A WebSocket's lease in the cluster: `release()` gives it back once, however many paths call it.
final class ClusterLease: Sendable {
    let id: String
    private let store: ClusterStore
    private let released = NIOLockedValueBox(false)

    fileprivate init(id: String, store: ClusterStore) {
        self.id = id
        self.store = store
    }

    func release() {
        guard !released.withLockedValue({ old in defer { old = true }; return old }) else { return }
        store.release(id)
    }
}

/// The Redis keys and channel of the cluster.
enum Keys {
    static func index(_ prefix: String, _ instance: String) -> String { "\(prefix):leases:\(instance)" }
    static func instances(_ prefix: String) -> String { "\(prefix):instances" }
    static func routeCap(_ prefix: String, _ route: String) -> String { "\(prefix):ws:\(route)" }
    static func userCap(_ prefix: String, _ route: String, _ user: String) -> String { "\(prefix):ws:\(route):user:\(user)" }
    static func rate(_ prefix: String, _ route: String, _ kind: String, _ subject: String) -> String { "\(prefix):rate:\(route):\(kind):\(subject)" }
    static func kickChannel(_ prefix: String) -> String { "\(prefix):kick" }
}

extension ClusterStore {
    /// The store for `configuration`, with its password and TLS context read now; errors name
    /// the key to fix.
    static func make(_ configuration: ClusterConfiguration, eventLoop: any EventLoop, metrics: GatewayMetrics, registry: ConnectionRegistry, logger: Logger) throws(ConfigError) -> ClusterStore {
        var password: String?
        if let file = configuration.passwordFile {
            do {
                password = try String(contentsOfFile: file, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
            } catch {
                throw ConfigError(path: "cluster.password_file", message: "cannot read \(file): \(error.localizedDescription)")
            }
            if password?.isEmpty ?? true { throw ConfigError(path: "cluster.password_file", message: "\(file) is empty") }
        }
        var tls: NIOSSLContext?
        if configuration.redis.tls {
            var settings = TLSConfiguration.makeClientConfiguration()
            if let caFile = configuration.caFile { settings.trustRoots = .file(caFile) }
            do {
                tls = try NIOSSLContext(configuration: settings)
            } catch {
                throw ConfigError(path: "cluster.ca_file", message: "cannot build the TLS context for Redis: \(error)")
            }
        }
        return ClusterStore(configuration: configuration, password: password, tls: tls, eventLoop: eventLoop, metrics: metrics, registry: registry, logger: logger)
    }
}
