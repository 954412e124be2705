import Crypto
import Foundation
import Testing

/// Change as a non-event (issue 20), through a `sluice` process: reloads under load, certificate
/// swaps, refused configurations by every trigger, the drain on SIGTERM and `POST /drain`,
/// SIGUSR1 and sd_notify.
@Suite("Live change through a sluice process", .serialized)
struct LiveChangeTests {
    static let livePeer = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Peers/live_peer.py").path

    /// A directory with two certificates for `localhost` (`a/` and `b/`) and the one in use
    /// copied to `live.pem`/`live-key.pem`.
    static func certificates() throws -> String {
        let directory = Scratch.path("sluice-live-")
        for name in ["a", "b"] {
            try FileManager.default.createDirectory(atPath: "\(directory)/\(name)", withIntermediateDirectories: true)
            try TestCertificateAuthority.write(serverName: "localhost", in: "\(directory)/\(name)")
        }
        try use(certificate: "a", in: directory)
        return directory
    }

    static func use(certificate name: String, in directory: String) throws {
        for (from, to) in [("server.pem", "live.pem"), ("server-key.pem", "live-key.pem")] {
            let data = try Data(contentsOf: URL(fileURLWithPath: "\(directory)/\(name)/\(from)"))
            try data.write(to: URL(fileURLWithPath: "\(directory)/\(to)"), options: .atomic)
        }
    }

    /// SHA-256 of a PEM certificate's DER, as `tls-probe` reports it.
    static func fingerprint(_ pem: String) throws -> String {
        let body = pem.split(separator: "\n").filter { !$0.hasPrefix("-----") }.joined()
        let der = try #require(Data(base64Encoded: body))
        return SHA256.hash(data: der).map { String(format: "%02x", $0) }.joined()
    }

    /// The probes: what one request, upgrade or handshake gets.
    /// The status of an upgrade to `url`, or what went wrong. The handshake may take as long
    /// as an admin answer may: the gateway holds 2,000 busy WebSockets beside the whole suite.
    static func status(_ url: String) async throws -> Int? {
        let result = try await PythonPeer.run(["client", "status", url, #"{"open_timeout": \#(adminTimeout)}"#], timeout: TimeInterval(adminTimeout + 30))
        if result["status"] == nil { Issue.record("no answer to the upgrade of \(url): \(result)") }
        return result["status"] as? Int
    }

    static func servedFingerprint(port: Int) async throws -> String? {
        try await PythonPeer.run(["tls-probe", "127.0.0.1", "\(port)", "localhost"])["der_sha256"] as? String
    }

    /// Seconds an admin answer may take: 2,000 WebSockets from one Python process beside the
    /// rest of the suite on two cores once kept an answer past the usual 10 s.
    static let adminTimeout = 60

    static func admin(_ sluice: SluiceProcess, _ session: PythonSession, _ path: String, method: String = "GET") async throws -> [String: Any] {
        try await session.send(["op": "http", "url": "http://127.0.0.1:\(sluice.ports["admin"]!)\(path)", "method": method, "timeout": adminTimeout])
    }

    static func reloads(_ sluice: SluiceProcess, _ session: PythonSession, result: String) async throws -> Double {
        try await session.metrics("http://127.0.0.1:\(sluice.ports["admin"]!)/metrics", timeout: adminTimeout).value("sluice_config_reloads_total", ["result": result])
    }

    /// The configuration of the reload test at step `step`: route `a` (the held connections'
    /// route) alternates its message size limit; route `b` comes and goes; the TLS listener's
    /// certificate files are swapped by the test. The header and TLS handshake timeouts are
    /// generous: a burst of 2,000 opens from one Python process on a loaded 2-core machine is
    /// not what the test is about.
    static func config(step: Int, directory: String) -> String {
        var yaml = """
            admin: { address: "127.0.0.1:0" }
            listeners:
              - { name: plain, address: "127.0.0.1:0", backlog: 4096, http: { header_timeout: 60s } }
              - name: tls
                address: "127.0.0.1:0"
                backlog: 4096
                http: { header_timeout: 60s }
                tls: { handshake_timeout: 60s, certificates: [ { cert: \(directory)/live.pem, key: \(directory)/live-key.pem } ] }
            routes:
              - name: a
                match: { path_prefix: /a }
                backends: ["builtin:echo"]
                websocket: { max_message_size: \(step % 2 == 0 ? "64KiB" : "200B"), idle_timeout: 5m }

            """
        if step % 3 == 1 {
            yaml += """
                  - name: b
                    match: { path_prefix: /b }
                    backends: ["builtin:echo"]

                """
        }
        return yaml
    }

    @Test("2,000 WebSockets through 20 reloads (SIGHUP and POST /reload, routes and certificates changing): none dropped, no message lost or reordered, each keeps its route's snapshot", .loadTest)
    func reloadsUnderLoad() async throws {
        let directory = try Self.certificates()
        let sluice = try SluiceProcess(yaml: Self.config(step: 0, directory: directory), waitingFor: ["plain", "tls", "admin"])
        defer { sluice.stop() }
        let session = try PythonSession()
        defer { session.stop() }
        let plain = sluice.ports["plain"]!, tls = sluice.ports["tls"]!
        let urls = Array(repeating: "ws://127.0.0.1:\(plain)/a", count: 9) + ["wss://127.0.0.1:\(tls)/a"]
        let hold = try StreamingPeer(script: Self.livePeer, arguments: ["hold", urls.joined(separator: ","), "2000", "300"])
        defer { hold.stop() }
        let opened = try await hold.line(startingWith: "OPEN")
        #expect(opened == "OPEN 2000")
        let fingerprints = [
            "a": try Self.fingerprint(String(contentsOfFile: "\(directory)/a/server.pem", encoding: .utf8)),
            "b": try Self.fingerprint(String(contentsOfFile: "\(directory)/b/server.pem", encoding: .utf8)),
        ]
        #expect(try await Self.servedFingerprint(port: tls) == fingerprints["a"])
        var certificate = "a"
        for step in 1...20 {
            if step % 4 == 0 {
                certificate = certificate == "a" ? "b" : "a"
                try Self.use(certificate: certificate, in: directory)
            }
            try Self.config(step: step, directory: directory).write(toFile: sluice.configFile, atomically: true, encoding: .utf8)
            if step % 2 == 1 {
                let before = try await Self.reloads(sluice, session, result: "success")
                sluice.signal(SIGHUP)
                var after = before
                for _ in 0..<200 where after == before {
                    try await Task.sleep(for: .milliseconds(25))
                    after = try await Self.reloads(sluice, session, result: "success")
                }
                #expect(after == before + 1, "step \(step): SIGHUP did not reload")
            } else {
                let answer = try await Self.admin(sluice, session, "/reload", method: "POST")
                #expect(answer["status"] as? Int == 200, "step \(step): \(answer)")
            }
            // New connections see the new routes at once.
            let status = try await Self.status("ws://127.0.0.1:\(plain)/b")
            #expect(status == (step % 3 == 1 ? 101 : 404), "step \(step): /b answered \(status.map(String.init) ?? "nothing")")
            if step % 4 == 0 {
                #expect(try await Self.servedFingerprint(port: tls) == fingerprints[certificate], "step \(step): the new certificate is served")
            }
            if step == 5 || step == 6 {
                // New connections get the new limit; the held ones keep theirs (the hold
                // peer sends 1000-byte messages throughout and would see a 1009).
                // (Its handshake may take as long as an admin answer, for the reason above.)
                let probe = try await PythonPeer.run(
                    ["raw-client", "too-big", "127.0.0.1", "\(plain)", #"{"path": "/a", "size": 1000, "timeout": \#(Self.adminTimeout)}"#],
                    timeout: TimeInterval(Self.adminTimeout + 30)
                )
                if step == 5 {
                    #expect(probe["opcode"] as? Int == 8 && probe["close_code"] as? Int == 1009, "step \(step): \(probe)")
                } else {
                    #expect(probe["opcode"] as? Int == 2, "step \(step): the message is echoed again: \(probe)")
                }
            }
        }
        // Every connection must have had an echo during the reloads and one after them: a
        // property of each connection, not a count of messages the loaded machine managed.
        hold.signal(SIGUSR1)
        let result = try await hold.result(timeout: .seconds(120))
        #expect(result["opened"] as? Int == 2000, "\(result)")
        #expect(result["failed_opens"] as? Int == 0, "\(result)")
        #expect((result["unexpected_closes"] as? [String: Int])?.isEmpty == true, "connections dropped: \(result)")
        #expect(result["lost"] as? Int == 0 && result["mismatched"] as? Int == 0, "messages lost or out of order: \(result)")
        #expect(result["quiet_before"] as? Int == 0 && result["quiet_after"] as? Int == 0, "connections that stopped echoing: \(result)")
        #expect(try await Self.reloads(sluice, session, result: "failure") == 0)
    }

    @Test("a certificate whose key does not match, that does not parse, or that has expired is refused; the old one stays in force")
    func badCertificates() async throws {
        let directory = try Self.certificates()
        let sluice = try SluiceProcess(yaml: Self.config(step: 0, directory: directory), waitingFor: ["tls", "admin"])
        defer { sluice.stop() }
        let session = try PythonSession()
        defer { session.stop() }
        let served = try await Self.servedFingerprint(port: sluice.ports["tls"]!)
        let goodKey = try String(contentsOfFile: "\(directory)/live-key.pem", encoding: .utf8)
        // b's key with a's certificate; a truncated certificate.
        try String(contentsOfFile: "\(directory)/b/server-key.pem", encoding: .utf8).write(toFile: "\(directory)/live-key.pem", atomically: true, encoding: .utf8)
        let mismatch = try await Self.admin(sluice, session, "/reload", method: "POST")
        #expect(mismatch["status"] as? Int == 422)
        #expect((mismatch["body"] as? String)?.contains("does not match") == true, "\(mismatch)")
        try goodKey.write(toFile: "\(directory)/live-key.pem", atomically: true, encoding: .utf8)
        try "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n".write(toFile: "\(directory)/live.pem", atomically: true, encoding: .utf8)
        let garbage = try await Self.admin(sluice, session, "/reload", method: "POST")
        #expect(garbage["status"] as? Int == 422, "\(garbage)")
        #expect((garbage["body"] as? String)?.contains("live.pem") == true, "\(garbage)")
        try ExpiredCertificate.write(serverName: "localhost", certificate: "\(directory)/live.pem", key: "\(directory)/live-key.pem")
        let expired = try await Self.admin(sluice, session, "/reload", method: "POST")
        #expect(expired["status"] as? Int == 422)
        #expect((expired["body"] as? String)?.contains("expired") == true, "\(expired)")
        #expect(try await Self.servedFingerprint(port: sluice.ports["tls"]!) == served)
        #expect(try await Self.reloads(sluice, session, result: "failure") == 3)
    }

    @Test("an invalid configuration is refused by every trigger (SIGHUP, POST /reload, the file watch); the old one keeps routing; a valid one is picked up by the watch")
    func refusedByEveryTrigger() async throws {
        let yaml = """
            admin: { address: "127.0.0.1:0" }
            reload: { watch: true, watch_interval: 200ms }
            listeners: [ { name: plain, address: "127.0.0.1:0" } ]
            routes:
              - { name: a, match: { path_prefix: /a }, backends: ["builtin:echo"] }
            """
        let sluice = try SluiceProcess(yaml: yaml, waitingFor: ["plain", "admin"])
        defer { sluice.stop() }
        let session = try PythonSession()
        defer { session.stop() }
        let plain = sluice.ports["plain"]!
        try (yaml + "\n  - { name: b, match: { path_prefix: /b }, backends: [\"ftp://x\"] }\n").write(toFile: sluice.configFile, atomically: true, encoding: .utf8)
        // The watch sees it first (within two intervals).
        var failures = 0.0
        for _ in 0..<100 where failures == 0 {
            try await Task.sleep(for: .milliseconds(50))
            failures = try await Self.reloads(sluice, session, result: "failure")
        }
        #expect(failures == 1)
        sluice.signal(SIGHUP)
        for _ in 0..<100 where failures < 2 {
            try await Task.sleep(for: .milliseconds(50))
            failures = try await Self.reloads(sluice, session, result: "failure")
        }
        #expect(failures == 2)
        let answer = try await Self.admin(sluice, session, "/reload", method: "POST")
        #expect(answer["status"] as? Int == 422)
        #expect((answer["body"] as? String)?.contains("sluice.yaml:6: routes[1].backends[0]: scheme must be") == true, "\(answer)")
        #expect(try await Self.reloads(sluice, session, result: "failure") == 3)
        #expect(await sluice.logged("configuration refused; the old one stays in force"))
        #expect(try await Self.status("ws://127.0.0.1:\(plain)/a") == 101)
        // A valid change is picked up by the watch.
        try (yaml + "\n  - { name: b, match: { path_prefix: /b }, backends: [\"builtin:echo\"] }\n").write(toFile: sluice.configFile, atomically: true, encoding: .utf8)
        var status: Int?
        for _ in 0..<100 where status != 101 {
            try await Task.sleep(for: .milliseconds(50))
            status = try await Self.status("ws://127.0.0.1:\(plain)/b")
        }
        #expect(status == 101)
        let ready = try await Self.admin(sluice, session, "/readyz")
        #expect((ready["body"] as? String)?.contains("config_version") == true)
    }

    static func drainConfig(backend: Int, shutdown: String) -> String {
        """
        admin: { address: "127.0.0.1:0" }
        shutdown: \(shutdown)
        listeners: [ { name: plain, address: "127.0.0.1:0", backlog: 4096 } ]
        routes:
          - name: stream
            match: { path_prefix: /stream }
            backends: ["ws://127.0.0.1:\(backend)"]
            websocket: { close_timeout: 3s }
        """
    }

    @Test("SIGTERM with 1,000 WebSockets: /readyz 503 while still accepting, 1001 to each at a message boundary, spread over the drain window, exit 0 by the deadline", .loadTest)
    func drainOnSigterm() async throws {
        let backend = try await PythonPeer(executable: "/usr/bin/env", arguments: ["python3", Self.livePeer, "fragments-backend"])
        let sluice = try SluiceProcess(
            yaml: Self.drainConfig(backend: backend.port, shutdown: "{ readiness_delay: 3s, drain_window: 4s, deadline: 15s }"),
            waitingFor: ["plain", "admin"]
        )
        defer { sluice.stop() }
        let session = try PythonSession()
        defer { session.stop() }
        let url = "ws://127.0.0.1:\(sluice.ports["plain"]!)/stream"
        let watch = try StreamingPeer(script: Self.livePeer, arguments: ["drain-watch", url, "1000", "30"])
        defer { watch.stop() }
        #expect(try await watch.line(startingWith: "OPEN") == "OPEN 1000")
        let signalled = Date().timeIntervalSince1970
        sluice.signal(SIGTERM)
        // During the readiness delay: not ready, still accepting (asked from the running session:
        // a new Python process may take longer than the delay to start on a loaded machine).
        #expect(try await Self.admin(sluice, session, "/readyz")["status"] as? Int == 503)
        #expect(try await session.send(["op": "open", "id": "late", "url": url])["status"] as? Int == 101)
        let result = try await watch.result(timeout: .seconds(60))
        let exit = await sluice.waitForExit(timeout: .seconds(20))
        #expect(exit == 0)
        #expect(result["opened"] as? Int == 1000)
        #expect((result["closes"] as? [String: Int])?["1001"] == 1000, "\(result)")
        #expect(result["mid_message"] as? Int == 0, "closes inside a fragmented message: \(result)")
        #expect(result["no_close"] as? Int == 0, "\(result)")
        let times = try #require(result["close_times"] as? [Double]).map { $0 - signalled }
        #expect(times.min() ?? 0 >= 2.9, "a close came during the readiness delay: \(times.min() ?? 0)")
        let buckets = Dictionary(grouping: times) { Int($0 * 10) }
        #expect((buckets.values.map(\.count).max() ?? 0) < 200, "closes in one 100 ms burst")
        // Spread, not a burst: the closes leave over the 4 s window, but they are timed where one
        // Python process reads 1,000 connections, which on a loaded machine reads the first ones
        // late (a CI run saw 2.06 s between the first and the last); a burst would be one bucket.
        #expect((times.max() ?? 0) - (times.min() ?? 0) > 1.5, "not spread over the 4 s window: \(times.min() ?? 0)...\(times.max() ?? 0)")
        backend.stop()
    }

    @Test("sluice stop --restart: every WebSocket gets 1012, and the process exits 0")
    func restartCode() async throws {
        let backend = try await PythonPeer(executable: "/usr/bin/env", arguments: ["python3", Self.livePeer, "fragments-backend"])
        let sluice = try SluiceProcess(
            yaml: Self.drainConfig(backend: backend.port, shutdown: "{ readiness_delay: 0s, drain_window: 1s, deadline: 10s }"),
            waitingFor: ["plain", "admin"]
        )
        defer { sluice.stop() }
        let watch = try StreamingPeer(script: Self.livePeer, arguments: ["drain-watch", "ws://127.0.0.1:\(sluice.ports["plain"]!)/stream", "200", "30"])
        defer { watch.stop() }
        #expect(try await watch.line(startingWith: "OPEN") == "OPEN 200")
        let stop = try await CommandLineTests.run(["stop", "--restart", "--config", sluice.configFile, "--admin", "127.0.0.1:\(sluice.ports["admin"]!)"])
        #expect(stop.status == 0, "\(stop.output)")
        let result = try await watch.result(timeout: .seconds(60))
        #expect((result["closes"] as? [String: Int])?["1012"] == 200, "\(result)")
        #expect(await sluice.waitForExit(timeout: .seconds(15)) == 0)
        backend.stop()
    }

    @Test("SIGUSR1 reopens a rotated access log; sd_notify says READY, RELOADING and STOPPING")
    func logRotationAndNotify() async throws {
        let directory = try Scratch.directory("sluice-usr1-")
        let notifications = try NotifySocket(path: "\(directory)/notify")
        let sluice = try SluiceProcess(yaml: """
            access_log: \(directory)/access.jsonl
            admin: { address: "127.0.0.1:0" }
            shutdown: { readiness_delay: 0s, drain_window: 0s, deadline: 5s }
            listeners: [ { name: plain, address: "127.0.0.1:0" } ]
            routes: [ { name: demo, builtin: demo } ]
            """, waitingFor: ["plain", "admin"], environment: ["NOTIFY_SOCKET": "\(directory)/notify"])
        defer { sluice.stop() }
        let page = "http://127.0.0.1:\(sluice.ports["plain"]!)/"
        #expect(try await Curl.run([page]).status == 200)
        try FileManager.default.moveItem(atPath: "\(directory)/access.jsonl", toPath: "\(directory)/access.jsonl.1")
        sluice.signal(SIGUSR1)
        #expect(await sluice.logged("access log reopened"))
        #expect(try await Curl.run([page]).status == 200)
        let rotated = try String(contentsOfFile: "\(directory)/access.jsonl.1", encoding: .utf8)
        let fresh = try String(contentsOfFile: "\(directory)/access.jsonl", encoding: .utf8)
        #expect(rotated.split(separator: "\n").count == 1 && fresh.split(separator: "\n").count == 1, "\(rotated) / \(fresh)")
        sluice.signal(SIGHUP)
        #expect(await sluice.logged("configuration reloaded"))
        sluice.signal(SIGTERM)
        #expect(await sluice.waitForExit(timeout: .seconds(10)) == 0)
        let seen = notifications.received(timeout: .seconds(2)).joined(separator: "|")
        #expect(seen.hasPrefix("READY=1"), "\(seen)")
        #expect(seen.contains("RELOADING=1\nMONOTONIC_USEC="), "\(seen)")
        #expect(seen.contains("STOPPING=1"), "\(seen)")
    }
}

/// A datagram socket standing in for systemd's NOTIFY_SOCKET.
final class NotifySocket: @unchecked Sendable {
    private let fd: Int32
    private let path: String

    init(path: String) throws {
        self.path = path
        fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue), 0)
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            for (index, byte) in path.utf8.enumerated() { raw[index] = byte }
        }
        let bound = withUnsafePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) } }
        guard bound == 0 else { throw PeerError(message: "cannot bind \(path)") }
    }

    /// Every datagram received so far (waiting up to `timeout` for the first).
    func received(timeout: Duration) -> [String] {
        var messages: [String] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            let count = recv(fd, &buffer, buffer.count, Int32(MSG_DONTWAIT))
            if count > 0 {
                messages.append(String(decoding: buffer.prefix(count), as: UTF8.self))
            } else if !messages.isEmpty {
                break
            } else {
                usleep(20_000)
            }
        }
        return messages
    }

    deinit {
        close(fd)
        unlink(path)
    }
}
