import Foundation
import Testing

/// Peers that fail at every step, on both sides, over ws and wss, through a `sluice` process:
/// the other side gets the right outcome within its bound, and afterwards the process holds
/// exactly the descriptors, registry entries, gauges and limit counts it held before.
@Suite("Fault matrix through a sluice process", .serialized)
struct FaultMatrixTests {
    /// How one side fails.
    enum Fault: String, CaseIterable {
        case clean, ignoreClose = "ignore-close", fin, rst
        case midHeader = "mid-header", midPayload = "mid-payload", midFragment = "mid-fragment"
        case handshake, tlsHandshake = "tls-handshake", slowReader = "slow-reader"
    }

    /// What the other side must see: a close code, or the connection ending without one
    /// (`tcp`), within `within` seconds of the watch starting; or (a failed upgrade) the status it
    /// gets. The bound proves a way out that does not wait for the idle timeout (minutes) or the
    /// watcher's own give-up (12 s); it leaves a loaded machine seconds of slack beyond what the
    /// fault itself waits.
    struct Expectation {
        var observed: String?
        var within: Double = slack
        var status: Int?
    }

    static let closeTimeout = 2.0
    /// Scheduling slack a busy CI machine may need on top of a bound.
    static let slack = 3.0
    /// How long the slow-reader peers hold before they vanish (0.2 s after the 101, then 1 s).
    static let slowReaderHold = 1.2

    /// A client that fails, watched by the backend.
    static func whenClientFails(_ fault: Fault) -> Expectation {
        switch fault {
        case .clean: Expectation(observed: "close 1000")
        case .ignoreClose: Expectation(observed: "tcp", within: closeTimeout + slack)
        case .slowReader: Expectation(observed: "close 1001", within: slowReaderHold + slack)
        case .fin, .rst, .midHeader, .midFragment: Expectation(observed: "close 1001")
        case .midPayload, .handshake: Expectation(observed: "tcp")
        case .tlsHandshake: Expectation()  // no backend connection is made
        }
    }

    /// A backend that fails, watched by the client.
    static func whenBackendFails(_ fault: Fault) -> Expectation {
        switch fault {
        case .clean: Expectation(observed: "close 1000")
        case .ignoreClose: Expectation(observed: "tcp", within: closeTimeout + slack)
        case .slowReader: Expectation(observed: "close 1014", within: slowReaderHold + slack)
        case .fin, .rst, .midHeader, .midFragment: Expectation(observed: "close 1014")
        case .midPayload: Expectation(observed: "tcp")
        case .handshake, .tlsHandshake: Expectation(status: 502)
        }
    }

    /// The sluice process, its backends, and the log the watching backend writes.
    final class Setup: @unchecked Sendable {
        let directory: String
        let log: String
        let backend: PythonPeer
        let tlsBackend: PythonPeer
        let vanishing: PythonPeer
        let sluice: SluiceProcess
        static let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Peers/fault_peer.py").path

        /// `closeTimeout` is the routes' close_timeout; a test that must act while a connection
        /// sits in closing takes a longer one, so a loaded machine cannot let it expire first.
        init(closeTimeout: Double = FaultMatrixTests.closeTimeout) async throws {
            directory = try Scratch.directory("sluice-faults-")
            try TestCertificateAuthority.write(serverName: "localhost", in: directory)
            log = "\(directory)/observed.jsonl"
            _ = FileManager.default.createFile(atPath: log, contents: nil)
            backend = try await PythonPeer(["backend", log], script: Self.script)
            tlsBackend = try await PythonPeer(["backend", log, "\(directory)/server.pem,\(directory)/server-key.pem"], script: Self.script)
            vanishing = try await PythonPeer(["vanish-backend"], script: Self.script)
            let settings = "websocket: { close_timeout: \(Int(closeTimeout))s, connect_timeout: 2s, handshake_timeout: 2s }"
            let limits = "limits: { max_websockets_per_ip: 50, max_websockets: 100 }"
            sluice = try SluiceProcess(yaml: """
                admin: { address: "127.0.0.1:0" }
                limits: { max_connections: 1000, max_connections_per_ip: 200 }
                listeners:
                  - { name: plain, address: "127.0.0.1:0" }
                  - name: tls
                    address: "127.0.0.1:0"
                    tls:
                      handshake_timeout: 2s
                      certificates: [ { cert: \(directory)/dev.pem, key: \(directory)/dev-key.pem, generate_if_missing: true } ]
                routes:
                  - name: ws
                    listeners: [plain]
                    match: { path_prefix: /ws }
                    backends: ["ws://127.0.0.1:\(backend.port)"]
                    \(settings)
                    \(limits)
                  - name: wss
                    listeners: [tls]
                    match: { path_prefix: /ws }
                    backends: ["wss://127.0.0.1:\(tlsBackend.port)"]
                    backend_tls: { ca_file: \(directory)/ca.pem, server_name: localhost }
                    \(settings)
                    \(limits)
                  - name: ws-vanishing
                    listeners: [plain]
                    match: { path_prefix: /ws/backend/tls-handshake }
                    backends: ["ws://127.0.0.1:\(vanishing.port)"]
                    \(settings)
                  - name: wss-vanishing
                    listeners: [tls]
                    match: { path_prefix: /ws/backend/tls-handshake }
                    backends: ["wss://127.0.0.1:\(vanishing.port)"]
                    backend_tls: { ca_file: \(directory)/ca.pem, server_name: localhost }
                    \(settings)
                """, waitingFor: ["plain", "tls", "admin"])
        }

        func stop() {
            sluice.stop()
            backend.stop()
            tlsBackend.stop()
            vanishing.stop()
        }

        func port(_ scheme: String) -> Int { sluice.ports[scheme == "wss" ? "tls" : "plain"]! }

        /// What the backend logged for one cell, once it has.
        func observed(_ id: String, timeout: Double = 15) async throws -> [String: Any]? {
            let deadline = Date().addingTimeInterval(timeout)
            while Date() < deadline {
                let text = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
                for line in text.split(separator: "\n") {
                    if let record = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any], record["id"] as? String == id {
                        return record
                    }
                }
                try await Task.sleep(for: .milliseconds(50))
            }
            return nil
        }

        /// Descriptors the sluice process has open.
        var descriptors: Int { (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(sluice.pid)/fd").count) ?? -1 }

        /// What the process holds: descriptors, live connections (registry), and the gauges of
        /// WebSockets, connections and limit counts.
        func holdings(_ session: PythonSession) async throws -> [String: Double] {
            let admin = sluice.ports["admin"]!
            let metrics = try await session.metrics("http://127.0.0.1:\(admin)/metrics")
            let connections = try await session.send(["op": "http", "url": "http://127.0.0.1:\(admin)/connections"])
            let listed = (try? JSONSerialization.jsonObject(with: Data((connections["body"] as? String ?? "{}").utf8)) as? [String: Any])?["total"] as? Int
            return [
                "registry": Double(listed ?? -1),
                "websockets_active": metrics.value("sluice_websockets_active"),
                "connections_active": metrics.value("sluice_connections_active"),
                "limit_websockets": metrics.value("sluice_limit_websockets"),
                "limit_tracked": metrics.value("sluice_limit_tracked"),
                "limit_connections": metrics.value("sluice_limit_connections"),
                "limit_connection_addresses": metrics.value("sluice_limit_connection_addresses"),
                "descriptors": Double(descriptors),
            ]
        }

        /// Waits (bounded) until the process holds what it held at `baseline`.
        func settles(to baseline: [String: Double], _ session: PythonSession) async throws -> [String: Double] {
            var now = try await holdings(session)
            let deadline = Date().addingTimeInterval(10)
            while now != baseline && Date() < deadline {
                try await Task.sleep(for: .milliseconds(100))
                now = try await holdings(session)
            }
            return now
        }
    }

    static func run(_ setup: Setup, _ scheme: String, _ side: String, _ fault: Fault, id: String) async throws -> [String: Any] {
        try await PythonPeer.run(["client", scheme, "127.0.0.1", "\(setup.port(scheme))", side, fault.rawValue, id], script: Setup.script, timeout: 30)
    }

    @Test("DELETE /connections/{id} releases a connection stuck in closing within close_timeout")
    func kickWhileClosing() async throws {
        let closeTimeout = 10.0
        let setup = try await Setup(closeTimeout: closeTimeout)
        defer { setup.stop() }
        let session = try PythonSession()
        defer { session.stop() }
        let admin = "http://127.0.0.1:\(setup.sluice.ports["admin"]!)"
        // The client closes; the backend never answers: the connection sits in closing.
        let client = Task { () -> (observed: String?, elapsed: Double?) in
            let result = try await Self.run(setup, "ws", "backend", .ignoreClose, id: "stuck")
            return (result["observed"] as? String, result["elapsed"] as? Double)
        }
        var listed: [[String: Any]] = []
        for _ in 0..<100 {
            let answer = try await session.send(["op": "http", "url": "\(admin)/connections"])
            listed = (try? JSONSerialization.jsonObject(with: Data((answer["body"] as? String ?? "{}").utf8)) as? [String: Any])?["connections"] as? [[String: Any]] ?? []
            if listed.first?["state"] as? String == "closing" { break }
            try await Task.sleep(for: .milliseconds(20))
        }
        let id = try #require(listed.first?["id"] as? Int, "\(listed)")
        #expect(listed.first?["state"] as? String == "closing")
        let kicked = try await session.send(["op": "http", "url": "\(admin)/connections/\(id)", "method": "DELETE"])
        #expect(kicked["status"] as? Int == 202)
        let kickedAt = Date()
        // The client, still waiting for the backend's answer, gets the kick's 1008.
        let result = try await client.value
        #expect(result.observed == "close 1008", "\(result)")
        // The whole connection (the backend side that never answers included) is gone once
        // close_timeout has run from the kick (with slack for a loaded machine: what must not
        // happen is that it stays listed for good).
        var status = 0
        while Date().timeIntervalSince(kickedAt) < closeTimeout + 20 {
            status = try await session.send(["op": "http", "url": "\(admin)/connections/\(id)"])["status"] as? Int ?? 0
            if status == 404 { break }
            try await Task.sleep(for: .milliseconds(50))
        }
        #expect(status == 404, "still listed \(Date().timeIntervalSince(kickedAt)) s after the kick")
    }

    @Test("client and backend failing at every step, over ws and wss: the other side's outcome, and nothing held afterwards")
    func matrix() async throws {
        let setup = try await Setup()
        defer { setup.stop() }
        let session = try PythonSession()
        defer { session.stop() }
        // A clean connection over each scheme first, so what a first TLS use opens for good is
        // in the baseline; then the baseline.
        for scheme in ["ws", "wss"] {
            let warm = try await Self.run(setup, scheme, "client", .clean, id: "warm-\(scheme)")
            #expect(warm["observed"] as? String == "close 1000", "\(warm)")
        }
        let baseline = try await setup.settles(to: [
            "registry": 0, "websockets_active": 0, "connections_active": 0, "limit_websockets": 0, "limit_tracked": 0,
            "limit_connections": 0, "limit_connection_addresses": 0, "descriptors": Double(setup.descriptors),
        ], session)
        #expect(baseline["registry"] == 0 && baseline["websockets_active"] == 0, "\(baseline)")
        for scheme in ["ws", "wss"] {
            for fault in Fault.allCases {
                for side in ["client", "backend"] {
                    let id = "\(scheme)-\(side)-\(fault.rawValue)"
                    let result = try await Self.run(setup, scheme, side, fault, id: id)
                    if side == "client" {
                        let expected = Self.whenClientFails(fault)
                        if let observed = expected.observed {
                            let record = try await setup.observed(id)
                            #expect(record?["observed"] as? String == observed, "\(id): the backend saw \(record.map { "\($0)" } ?? "nothing")")
                            #expect((record?["elapsed"] as? Double ?? 99) <= expected.within, "\(id): \(record.map { "\($0)" } ?? "")")
                        }
                        if fault == .ignoreClose {
                            // The client that never answers is itself dropped within the close timeout.
                            #expect((result["dropped_after"] as? Double ?? 99) <= Self.closeTimeout + Self.slack, "\(id): \(result)")
                        }
                    } else {
                        let expected = Self.whenBackendFails(fault)
                        if let status = expected.status {
                            #expect(result["status"] as? Int == status, "\(id): \(result)")
                        } else {
                            #expect(result["status"] as? Int == 101, "\(id): \(result)")
                            #expect(result["observed"] as? String == expected.observed, "\(id): the client saw \(result)")
                            #expect((result["elapsed"] as? Double ?? 99) <= expected.within, "\(id): \(result)")
                        }
                    }
                    let after = try await setup.settles(to: baseline, session)
                    #expect(after == baseline, "\(id): the process holds \(after), not \(baseline)")
                }
            }
        }
    }
}
