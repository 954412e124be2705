import Foundation
import Testing

/// Bad input of any kind gets an answer or a close, never a crash or a held connection: a
/// separate `sluice` process takes mutated requests, frames, credentials, TLS handshakes,
/// admin requests and half-closes from clients, and mutated responses from a backend
/// (`Peers/fuzz_peer.py`, fixed seeds, bounded in time). It keeps two cores busy for half a
/// minute, so it runs on its own (`SLUICE_BAD_INPUT=1`, as `.ci/run` does), not beside the
/// tests that check timing.
@Suite(
    "Bad input", .serialized,
    .enabled(
        if: ProcessInfo.processInfo.environment["SLUICE_BAD_INPUT"] != nil,
        "runs on its own: SLUICE_BAD_INPUT=1 swift test --filter BadInputTests (.ci/run does); beside the other tests its load makes their timing checks flaky"
    )
)
struct BadInputTests {
    static let fuzzPeer = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .appendingPathComponent("Peers/fuzz_peer.py").path

    /// The process's open sockets: the connections it holds (a timer or a file the runtime opens
    /// once, lazily, is not a held connection).
    static func openDescriptors(_ pid: Int32) -> Int {
        describeDescriptors(pid).filter { $0.contains("socket:") }.count
    }

    /// What each open descriptor is (`socket:[…]`, a path), for a failure's message.
    static func describeDescriptors(_ pid: Int32) -> [String] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/fd")) ?? []
        return names.sorted { (Int($0) ?? 0) < (Int($1) ?? 0) }.map { name in
            "\(name)→\((try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(pid)/fd/\(name)")) ?? "?")"
        }
    }

    @Test("mutated HTTP and WebSocket traffic both ways: the gateway stays up and holds no connection afterwards", arguments: [11, 12])
    func mutatedTraffic(seed: Int) async throws {
        let backend = try await PythonPeer(["backend", "\(seed)"], script: Self.fuzzPeer)
        let directory = try Scratch.directory("sluice-bad-input-")
        try String(repeating: "k", count: 40).write(toFile: "\(directory)/hmac", atomically: true, encoding: .utf8)
        let sluice = try SluiceProcess(yaml: """
            admin: { address: "127.0.0.1:0" }
            listeners:
              - name: plain
                address: 127.0.0.1:0
                http: { header_timeout: 2s }
              - name: tls
                address: 127.0.0.1:0
                http: { header_timeout: 2s }
                tls:
                  handshake_timeout: 2s
                  certificates: [ { cert: \(directory)/cert.pem, key: \(directory)/key.pem, generate_if_missing: true } ]
            routes:
              - name: authed
                match: { path_prefix: /auth }
                backends: ["http://127.0.0.1:\(backend.port)"]
                http: { response_timeout: 2s, idle_timeout: 2s, strip_prefix: true }
                websocket: { handshake_timeout: 2s, idle_timeout: 3s }
                auth:
                  methods:
                    - jwt: { bearer: true, cookie: session, query: access_token, algorithms: [HS256], hmac_secret_file: \(directory)/hmac }
                origin: { allowed: ["https://ok.example"], allow_missing: true }
              - name: app
                match: { path_prefix: / }
                backends: ["http://127.0.0.1:\(backend.port)"]
                http: { response_timeout: 2s, idle_timeout: 2s, max_request_body: 100KiB }
                websocket: { handshake_timeout: 2s, idle_timeout: 3s }
            """, waitingFor: ["plain", "tls", "admin"])
        let baseline = Self.openDescriptors(sluice.pid)
        let before = Self.describeDescriptors(sluice.pid)
        let ports = [sluice.port, sluice.ports["tls"] ?? 0, sluice.ports["admin"] ?? 0].map(String.init)
        let result = try await PythonPeer.run(["client", ports[0], "12", "\(seed)", ports[1], ports[2]], script: Self.fuzzPeer, timeout: 90)
        #expect(!sluice.hasExited, "sluice stopped (status \(sluice.exitStatus.map(String.init) ?? "?")) under seed \(seed)")
        // Every client is gone; once the backend is too, nothing may stay open past the timeouts.
        backend.stop()
        var open = Self.openDescriptors(sluice.pid)
        for _ in 0..<100 where open > baseline {
            try await Task.sleep(for: .milliseconds(100))
            open = Self.openDescriptors(sluice.pid)
        }
        let alive = !sluice.hasExited
        let after = Self.describeDescriptors(sluice.pid)
        sluice.stop()
        #expect(alive)
        #expect(open <= baseline, "\(open) sockets open after the run, \(baseline) before; new descriptors: \(Set(after).subtracting(before).sorted())")
        let requests = result["requests"] as? Int ?? 0, answered = result["answered"] as? Int ?? 0
        #expect(requests > 200 && answered > 50, "\(result)")
        #expect((result["tls_answered"] as? Int ?? 0) > 10 && (result["admin_answered"] as? Int ?? 0) > 5, "\(result)")
    }
}
