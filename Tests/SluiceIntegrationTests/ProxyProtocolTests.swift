import Foundation
import Testing

/// The PROXY protocol behind a balancer: HAProxy in TCP mode (`send-proxy`, `send-proxy-v2`) in
/// front of Sluice, and raw headers from a test client (`Peers/proxy_peer.py`): the address the
/// header carried is the client's in forwarding headers, the access log, `/connections` and the
/// per-address limits; bad headers and untrusted peers are refused and counted.
@Suite("PROXY protocol")
struct ProxyProtocolTests {
    static let peer = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Peers/proxy_peer.py").path

    static func send(_ port: Int, header: String, request: String = "GET /app/x HTTP/1.1\\r\\nHost: x\\r\\nConnection: close\\r\\n\\r\\n", source: String = "", delay: Double = 0) async throws -> [String: Any] {
        try await PythonPeer.run(["send", "127.0.0.1", "\(port)", header, request, source, "\(delay)"], script: peer, timeout: 60)
    }

    static func hex(_ text: String) -> String { Array(text.utf8).map { String(format: "%02x", $0) }.joined() }

    /// A v2 header: PROXY command over TCP/IPv4 or IPv6, with optional extra bytes (TLVs).
    static func v2(source: [UInt8], port: UInt16 = 40000, command: UInt8 = 0x21, family: UInt8? = nil, extra: [UInt8] = []) -> String {
        let signature: [UInt8] = [0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A]
        let v6 = source.count == 16
        let destination = [UInt8](repeating: v6 ? 0 : 10, count: source.count)
        let body = source + destination + [UInt8(port >> 8), UInt8(port & 0xFF), 0x01, 0xBB] + extra
        let bytes = signature + [command, family ?? (v6 ? 0x21 : 0x11), UInt8(body.count >> 8), UInt8(body.count & 0xFF)] + body
        return bytes.map { String(format: "%02x", $0) }.joined()
    }

    static func setup(from: String = "127.0.0.1/32", extra: String = "") async throws -> (TestGateway, Peers, String) {
        let backend = try await PythonPeer(["http-backend", "one"])
        let echo = try await PythonPeer(["backend", "echo"])
        let log = Scratch.path("sluice-proxy-", suffix: ".log")
        let gateway = try await TestGateway(yaml: """
        admin: { address: 127.0.0.1:0 }
        access_log: \(log)
        listeners:
          - name: plain
            address: 127.0.0.1:0
            proxy_protocol: any
            proxy_protocol_from: [\(from)]
            http: { header_timeout: 4s }
        \(extra)
        routes:
          - name: app
            match: { path_prefix: /app }
            backends: ["http://127.0.0.1:\(backend.port)"]
          - name: ws
            match: { path_prefix: /ws }
            backends: ["ws://127.0.0.1:\(echo.port)"]
            limits: { max_websockets_per_ip: 1 }
        """)
        return (gateway, Peers(http: backend, echo: echo), log)
    }

    /// The backends a test's gateway relays to, stopped together.
    struct Peers {
        let http: PythonPeer
        let echo: PythonPeer

        func stop() {
            http.stop()
            echo.stop()
        }
    }

    static func forwardedFor(_ result: [String: Any]) -> String? {
        let body = result["body"] as? String ?? ""
        let json = try? JSONSerialization.jsonObject(with: Data(body.utf8)) as? [String: Any]
        return (json?["headers"] as? [String: String])?["x-forwarded-for"]
    }

    @Test("HAProxy in TCP mode with send-proxy and send-proxy-v2: the backend and the access log see the client's address")
    func haproxy() async throws {
        try #require(FileManager.default.isExecutableFile(atPath: "/usr/sbin/haproxy"), "needs haproxy (apt)")
        let (gateway, backend, log) = try await Self.setup()
        defer { backend.stop() }
        let (v1, v2) = (LocalPort.free(), LocalPort.free())
        let config = Scratch.path("sluice-haproxy-", suffix: ".cfg")
        try """
        global
            maxconn 1000
        defaults
            mode tcp
            timeout connect 2s
            timeout client 30s
            timeout server 30s
        frontend v1
            bind 127.0.0.1:\(v1)
            default_backend v1
        backend v1
            server sluice 127.0.0.1:\(gateway.port("plain")) send-proxy
        frontend v2
            bind 127.0.0.1:\(v2)
            default_backend v2
        backend v2
            server sluice 127.0.0.1:\(gateway.port("plain")) send-proxy-v2

        """.write(toFile: config, atomically: true, encoding: .utf8)
        // Through the watcher, like every server the tests start: if this process dies (a crash
        // skips `defer`), the lifeline closes and HAProxy is killed, never left running.
        let haproxy = ChildProcess()
        haproxy.executableURL = URL(fileURLWithPath: "/bin/bash")
        haproxy.arguments = ["-c", SluiceProcess.watcher, "/usr/sbin/haproxy", "-f", config, "-db"]
        let lifeline = Pipe()
        haproxy.standardInput = lifeline
        let errors = Pipe()
        haproxy.standardOutput = FileHandle.nullDevice
        haproxy.standardError = errors
        try haproxy.run()
        defer {
            haproxy.terminate()
            haproxy.waitUntilExit()
            try? lifeline.fileHandleForWriting.close()
            try? FileManager.default.removeItem(atPath: config)
        }
        var listening = false
        var last: Curl.Result?
        for _ in 0..<100 where !listening {
            last = try? await Curl.run(["http://127.0.0.1:\(v2)/app/ping"])
            listening = last?.status == 200
            if !listening { try await Task.sleep(for: .milliseconds(100)) }
        }
        if !listening { haproxy.terminate() }
        #expect(listening, "haproxy did not come up (\(String(describing: last))): \(listening ? "" : String(decoding: errors.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self))")
        // Clients on other loopback addresses: HAProxy connects to Sluice from 127.0.0.1 and
        // tells it who the client was.
        let throughV1 = try await Curl.run(["--interface", "127.0.0.7", "http://127.0.0.1:\(v1)/app/v1"])
        let throughV2 = try await Curl.run(["--interface", "127.0.0.8", "http://127.0.0.1:\(v2)/app/v2"])
        #expect(throughV1.status == 200 && throughV2.status == 200, "\(throughV1) \(throughV2)")
        #expect((throughV1.json?["headers"] as? [String: String])?["x-forwarded-for"] == "127.0.0.7", "\(throughV1.body)")
        #expect((throughV2.json?["headers"] as? [String: String])?["x-forwarded-for"] == "127.0.0.8", "\(throughV2.body)")
        await gateway.stop()
        let lines = (try? String(contentsOfFile: log, encoding: .utf8))?.split(separator: "\n") ?? []
        #expect(lines.contains { $0.contains("\"client\":\"127.0.0.7\"") && $0.contains("/app/v1") }, "\(lines)")
        #expect(lines.contains { $0.contains("\"client\":\"127.0.0.8\"") && $0.contains("/app/v2") }, "\(lines)")
    }

    @Test("raw headers: v1 and v2 (IPv4, IPv6, TLVs, LOCAL) set the client address; per-address limits count the real clients")
    func rawHeaders() async throws {
        let (gateway, backend, _) = try await Self.setup()
        defer { backend.stop() }
        let port = gateway.port("plain")
        let v1 = try await Self.send(port, header: Self.hex("PROXY TCP4 203.0.113.9 10.0.0.1 5555 80\r\n"))
        #expect(Self.forwardedFor(v1) == "203.0.113.9", "\(v1)")
        let v1six = try await Self.send(port, header: Self.hex("PROXY TCP6 2001:db8::7 2001:db8::1 5555 443\r\n"))
        #expect(Self.forwardedFor(v1six) == "2001:db8::7", "\(v1six)")
        let unknown = try await Self.send(port, header: Self.hex("PROXY UNKNOWN\r\n"))
        #expect(Self.forwardedFor(unknown) == "127.0.0.1", "UNKNOWN: the socket's peer stands: \(unknown)")
        let v2 = try await Self.send(port, header: Self.v2(source: [198, 51, 100, 4]))
        #expect(Self.forwardedFor(v2) == "198.51.100.4", "\(v2)")
        let v2six = try await Self.send(port, header: Self.v2(source: [0x20, 0x01, 0x0d, 0xb8] + [UInt8](repeating: 0, count: 11) + [9]))
        #expect(Self.forwardedFor(v2six) == "2001:db8::9", "\(v2six)")
        // A TLV (type 0x04, NOOP, 3 bytes) after the addresses is skipped.
        let tlv = try await Self.send(port, header: Self.v2(source: [198, 51, 100, 5], extra: [0x04, 0x00, 0x03, 1, 2, 3]))
        #expect(Self.forwardedFor(tlv) == "198.51.100.5", "\(tlv)")
        let local = try await Self.send(port, header: Self.v2(source: [198, 51, 100, 6], command: 0x20))
        #expect(Self.forwardedFor(local) == "127.0.0.1", "LOCAL: the balancer's own connection: \(local)")

        // max_websockets_per_ip: 1 counts the header's addresses, not the balancer's.
        var holders: [StreamingPeer] = []
        defer { for holder in holders { holder.stop() } }
        var statuses: [Int] = []
        for address in ["192.0.2.1", "192.0.2.2", "192.0.2.1"] {
            let holder = try StreamingPeer(script: Self.peer, arguments: ["hold", "127.0.0.1", "\(port)", Self.hex("PROXY TCP4 \(address) 10.0.0.1 5555 80\r\n"), "/ws", "60"])
            holders.append(holder)
            let line = try await holder.line(startingWith: "{")
            statuses.append((try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])?["status"] as? Int ?? 0)
        }
        #expect(statuses == [101, 101, 429], "two clients, one each; the second from 192.0.2.1 refused: \(statuses)")
        let listing = try await Curl.run([gateway.adminURL("/connections")])
        let clients = Set((listing.json?["connections"] as? [[String: Any]] ?? []).compactMap { $0["client"] as? String })
        #expect(clients == ["192.0.2.1", "192.0.2.2"], "\(listing.body)")
        await gateway.stop()
    }

    @Test("bad headers: none, garbage, truncated, oversized, wrong version, unknown command or family, datagram, slow: each closed and counted; the gateway serves on")
    func badHeaders() async throws {
        let (gateway, backend, _) = try await Self.setup()
        defer { backend.stop() }
        let port = gateway.port("plain")
        let signature = "0d0a0d0a000d0a515549540a"
        let cases: [(String, String, Double)] = [
            ("no header", "", 0),
            ("garbage", Self.hex("HELLO THERE\r\n"), 0),
            ("v1 without CRLF, too long", Self.hex("PROXY TCP4 " + String(repeating: "1", count: 120)), 0),
            ("v1 wrong family", Self.hex("PROXY TCP4 2001:db8::1 10.0.0.1 1 2\r\n"), 0),
            ("v1 bad port", Self.hex("PROXY TCP4 1.2.3.4 10.0.0.1 99999 80\r\n"), 0),
            ("v1 missing fields", Self.hex("PROXY TCP4 1.2.3.4\r\n"), 0),
            ("v1 bad protocol", Self.hex("PROXY UDP4 1.2.3.4 10.0.0.1 1 2\r\n"), 0),
            ("v2 version 3", signature + "31110000", 0),
            ("v2 unknown command", signature + "2f110000", 0),
            ("v2 unknown family", signature + "21510000", 0),
            ("v2 datagram", signature + "2112000c" + "0102030405060708090a0b0c", 0),
            ("v2 short addresses", signature + "21110004" + "01020304", 0),
            ("v2 oversized", signature + "2111ffff", 0),
            ("slow header", Self.hex("PROXY TCP4 1.2.3.4 10.0.0.1 1 2\r\n"), 0.2),
        ]
        for (name, header, delay) in cases {
            let result = try await Self.send(port, header: header, delay: delay)
            #expect(result["status"] is NSNull || result["status"] == nil, "\(name): answered \(result)")
            #expect(result["closed"] as? Bool == true, "\(name): not closed: \(result)")
        }
        // Truncated: the client leaves inside the header.
        _ = try await Self.send(port, header: signature + "2111", request: "")
        let metrics = try await Curl.run([gateway.adminURL("/metrics")]).body
        let refusals = metrics.split(separator: "\n").filter { $0.hasPrefix("sluice_proxy_protocol_errors_total{") }
        let total = refusals.compactMap { Double($0.split(separator: " ").last ?? "") }.reduce(0, +)
        #expect(total >= Double(cases.count), "\(refusals)")
        #expect(refusals.contains { $0.contains("reason=\"timeout\"") }, "\(refusals)")
        let fine = try await Self.send(port, header: Self.hex("PROXY TCP4 203.0.113.1 10.0.0.1 1 2\r\n"))
        #expect(Self.forwardedFor(fine) == "203.0.113.1", "the gateway serves on: \(fine)")
        await gateway.stop()
    }

    @Test("a peer outside proxy_protocol_from is refused before a byte is read; bad settings are config errors")
    func untrustedPeer() async throws {
        let (gateway, backend, _) = try await Self.setup(from: "10.0.0.0/8")
        defer { backend.stop() }
        let result = try await Self.send(gateway.port("plain"), header: Self.hex("PROXY TCP4 203.0.113.9 10.0.0.1 5555 80\r\n"))
        #expect(result["status"] is NSNull || result["status"] == nil, "\(result)")
        #expect(result["closed"] as? Bool == true)
        let metrics = try await Curl.run([gateway.adminURL("/metrics")]).body
        #expect(metrics.contains("reason=\"untrusted_peer\""), "\(metrics.split(separator: "\n").filter { $0.contains("proxy_protocol") })")
        await gateway.stop()
        for bad in ["proxy_protocol: v3, proxy_protocol_from: [127.0.0.1/32]", "proxy_protocol: v1", "proxy_protocol_from: [127.0.0.1/32]",
                    "proxy_protocol: v2, proxy_protocol_from: [not-a-cidr]"] {
            let yaml = "listeners: [ { name: p, address: \"127.0.0.1:0\", \(bad) } ]\nroutes: [ { name: d, builtin: demo } ]\n"
            await #expect(throws: (any Error).self, "\(bad)") { _ = try await TestGateway(yaml: yaml) }
        }
    }
}
