import Foundation
import Logging
import NIOCore
import Sluice
import SluiceConfig
import Synchronization
import Testing

/// A `Gateway` bound to OS-chosen loopback ports, configured from YAML text.
final class TestGateway: @unchecked Sendable {
    let gateway: Gateway
    let listeners: [Gateway.BoundListener]

    /// Starts a gateway; `yaml` may use `{{CERTS}}` for a temporary directory of dev certificates.
    init(yaml: String, baseDirectory: String = NSTemporaryDirectory(), logger custom: Logger? = nil) async throws {
        let configuration = try ConfigurationLoader.parse(yaml: yaml, baseDirectory: baseDirectory)
        var logger = custom ?? Logger(label: "sluice-test")
        if custom == nil {
            logger.logLevel = ProcessInfo.processInfo.environment["SLUICE_TEST_LOG"].flatMap(Logger.Level.init(rawValue:)) ?? .error
        }
        gateway = Gateway(configuration: configuration, logger: logger)
        listeners = try await gateway.start()
    }

    /// The port a listener was bound to at start. A name the configuration lacks fails the test
    /// that asked (and gives a port nothing listens on) rather than crashing the whole run.
    func port(_ name: String) -> Int {
        guard let port = listeners.first(where: { $0.name == name })?.address.port else {
            Issue.record("no listener named \(name) was bound (listeners: \(listeners.map(\.name)))")
            return 1
        }
        return port
    }

    private let stopped = Atomic<Bool>(false)

    /// Shuts the gateway down: every live WebSocket gets its close at once, and `drainTimeout`
    /// to finish its close handshake before it is closed at the TCP level.
    func stop(drainTimeout: Duration = .seconds(2)) async {
        stopped.store(true, ordering: .relaxed)
        await gateway.shutdown(drainTimeout: drainTimeout)
    }

    /// A test that failed before its `stop()` still closes its listeners and connections: the
    /// gateway shuts down on its own once the test lets go of it.
    deinit {
        guard !stopped.load(ordering: .relaxed) else { return }
        let gateway = self.gateway
        Task { await gateway.shutdown(drainTimeout: .zero) }
    }

    /// `ws://127.0.0.1:PORT/ws…` on the plain listener.
    func url(_ path: String = "/ws") -> String { "ws://127.0.0.1:\(port("plain"))\(path)" }

    /// `http://ADDRESS/…` on the admin listener. One that is not running (stopped by a drain
    /// that ended sooner than the test expected) is the test's failure, not the whole run's
    /// crash: it is recorded, and the URL is one nothing listens on.
    func adminURL(_ path: String) -> String {
        guard let port = gateway.adminAddress?.port else {
            Issue.record("the admin listener is not running")
            return "http://127.0.0.1:1\(path)"
        }
        return "http://127.0.0.1:\(port)\(path)"
    }

    /// Waits until `condition` holds, up to `timeout`; returns whether it did.
    func eventually(_ timeout: Duration = .seconds(10), _ condition: () async throws -> Bool) async rethrows -> Bool {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            if try await condition() { return true }
            try? await Task.sleep(for: .milliseconds(50))
        }
        return try await condition()
    }

    /// One plain listener and one route (`/ws`) to `backend`; `websocket` and `route` are
    /// extra YAML lines for the route's `websocket:` block and the route itself, `top` for the
    /// top level (limits, admin, access_log).
    static func relay(to backend: String, websocket: [String] = [], route: [String] = [], top: [String] = []) async throws -> TestGateway {
        var settings = websocket
        if !settings.contains(where: { $0.hasPrefix("close_timeout") }) { settings.append("close_timeout: 2s") }
        var lines = top + [
            "listeners:",
            "  - name: plain",
            "    address: 127.0.0.1:0",
            "routes:",
            "  - name: ws",
            "    match: { path_prefix: /ws }",
            "    backends: [\"\(backend)\"]",
        ]
        lines += route.map { "    " + $0 }
        lines.append("    websocket:")
        lines += settings.map { "      " + $0 }
        return try await TestGateway(yaml: lines.joined(separator: "\n"))
    }
}

/// Resident set size of this process, in bytes (from /proc).
func residentBytes() -> Int {
    guard let status = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8) else { return 0 }
    for line in status.split(separator: "\n") where line.hasPrefix("VmRSS:") {
        let digits = line.split(separator: " ").dropFirst().first.flatMap { Int($0) } ?? 0
        return digits * 1024
    }
    return 0
}

/// A log handler that keeps every line (message and metadata) for inspection.
struct CapturingLogHandler: LogHandler {
    final class Store: @unchecked Sendable {
        private let lock = NSLock()
        private var lines: [String] = []
        func append(_ line: String) { lock.withLock { lines.append(line) } }
        var text: String { lock.withLock { lines.joined(separator: "\n") } }
        var count: Int { lock.withLock { lines.count } }
    }

    let store: Store
    var metadata: Logger.Metadata = [:]
    var logLevel: Logger.Level = .trace

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        let merged = metadata.merging(event.metadata ?? [:]) { $1 }
        store.append("\(event.level) \(event.message) \(merged.map { "\($0.key)=\($0.value)" }.sorted().joined(separator: " "))")
    }
}
