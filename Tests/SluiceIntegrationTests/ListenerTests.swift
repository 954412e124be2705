import Foundation
import Sluice
import SluiceConfig
import Testing

/// Listeners over loopback: TLS with SNI, protocol versions, head limits and timeouts, as real
/// clients (Python's `ssl` and raw sockets) see them.
@Suite("Listeners over loopback")
struct ListenerTests {
    /// A TLS listener with certificates for a.test (default) and b.test, and a plain one.
    static func gateway() async throws -> TestGateway {
        let directory = try Scratch.directory("sluice-listener-")
        for name in ["a", "b"] {
            let (certificate, key) = try DevCertificate.generate(names: ["\(name).test"])
            try certificate.write(toFile: "\(directory)/\(name).pem", atomically: true, encoding: .utf8)
            try key.write(toFile: "\(directory)/\(name)-key.pem", atomically: true, encoding: .utf8)
        }
        return try await TestGateway(yaml: """
            listeners:
              - name: tls
                address: 127.0.0.1:0
                tls:
                  certificates:
                    - { cert: a.pem, key: a-key.pem }
                    - { cert: b.pem, key: b-key.pem }
              - name: tls-h1
                address: 127.0.0.1:0
                tls:
                  certificates:
                    - { cert: a.pem, key: a-key.pem }
                http: { versions: [http/1.1] }
              - name: plain
                address: 127.0.0.1:0
                http: { header_timeout: 500ms, max_headers: 20, max_header_bytes: 2KiB }
            routes:
              - name: ws
                match: { path_prefix: /ws }
                backends: ["ws://127.0.0.1:9"]
            """, baseDirectory: directory)
    }

    static func fingerprint(_ gateway: TestGateway, _ name: String) throws -> String {
        let listener = try #require(gateway.gateway.configuration.listeners.first { $0.tls != nil })
        let store = try CertificateStore(configuration: listener.tls!)
        return store.select(serverName: name).fingerprint.replacingOccurrences(of: ":", with: "")
    }

    @Test("each SNI name gets its certificate; an unknown name gets the default; ALPN picks h2 unless the listener serves only http/1.1")
    func sni() async throws {
        let gateway = try await Self.gateway()
        let port = "\(gateway.port("tls"))"
        let a = try await PythonPeer.run(["tls-probe", "127.0.0.1", port, "a.test"])
        let b = try await PythonPeer.run(["tls-probe", "127.0.0.1", port, "b.test"])
        let unknown = try await PythonPeer.run(["tls-probe", "127.0.0.1", port, "unknown.test"])
        let http1Only = try await PythonPeer.run(["tls-probe", "127.0.0.1", "\(gateway.port("tls-h1"))", "a.test"])
        await gateway.stop()
        #expect(a["der_sha256"] as? String == (try Self.fingerprint(gateway, "a.test")))
        #expect(b["der_sha256"] as? String == (try Self.fingerprint(gateway, "b.test")))
        #expect(a["der_sha256"] as? String != b["der_sha256"] as? String)
        #expect(unknown["der_sha256"] as? String == a["der_sha256"] as? String)
        // The probe offers h2 and http/1.1.
        #expect(a["alpn"] as? String == "h2")
        #expect(http1Only["alpn"] as? String == "http/1.1")
        #expect((a["version"] as? String)?.hasPrefix("TLSv1.") == true)
    }

    @Test("TLS 1.1 is refused, and counted as a handshake failure")
    func tls11Refused() async throws {
        let gateway = try await Self.gateway()
        let result = try await PythonPeer.run(["tls-probe", "127.0.0.1", "\(gateway.port("tls"))", "a.test", "1.1"])
        let failures = await gateway.eventually {
            String(decoding: gateway.gateway.metrics.render(), as: UTF8.self).contains(#"sluice_tls_handshake_failures_total{listener="tls"} 1"#)
        }
        #expect(failures)
        await gateway.stop()
        let error = try #require(result["error"] as? String, "\(result)")
        #expect(error.contains("PROTOCOL_VERSION") || error.contains("VERSION"), "\(error)")
    }

    @Test("a slow client gets a 408")
    func slowClient() async throws {
        let gateway = try await Self.gateway()
        let result = try await PythonPeer.run(["http-raw", "127.0.0.1", "\(gateway.port("plain"))", "GET /ws HTTP/1.1\\r\\nHost: x\\r\\n"])
        await gateway.stop()
        #expect(result["status"] as? Int == 408, "\(result)")
        let elapsed = try #require(result["elapsed"] as? Double)
        #expect(elapsed >= 0.45 && elapsed < 5)
    }

    @Test("an oversized head gets a 431")
    func oversizedHead() async throws {
        let gateway = try await Self.gateway()
        let big = String(repeating: "a", count: 3000)
        let result = try await PythonPeer.run(["http-raw", "127.0.0.1", "\(gateway.port("plain"))", "GET /ws HTTP/1.1\\r\\nHost: x\\r\\nX-Big: \(big)\\r\\n\\r\\n"])
        await gateway.stop()
        #expect(result["status"] as? Int == 431, "\(result)")
    }

    @Test("an unknown path gets a 404, over TLS too")
    func unknownPath() async throws {
        let gateway = try await Self.gateway()
        let plain = try await PythonPeer.run(["http-raw", "127.0.0.1", "\(gateway.port("plain"))", "GET /nope HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n"])
        let tls = try await PythonPeer.run(["client", "status", "wss://127.0.0.1:\(gateway.port("tls"))/nope"])
        await gateway.stop()
        #expect(plain["status"] as? Int == 404, "\(plain)")
        #expect(tls["status"] as? Int == 404, "\(tls)")
    }

    @Test("a WebSocket through the TLS listener reaches the built-in echo backend")
    func wssEcho() async throws {
        let directory = Scratch.path("sluice-wss-")
        let gateway = try await TestGateway(yaml: """
            listeners:
              - name: tls
                address: 127.0.0.1:0
                tls:
                  certificates:
                    - { cert: dev.pem, key: dev-key.pem, generate_if_missing: true }
            routes:
              - name: echo
                match: { path_prefix: /echo }
                backends: ["builtin:echo"]
            """, baseDirectory: directory)
        let result = try await PythonPeer.run(["client", "sleep-then-echo", "wss://localhost:\(gateway.port("tls"))/echo", #"{"sleep": 0.1}"#])
        await gateway.stop()
        #expect(result["echo"] as? String == "still here", "\(result)")
    }
}
