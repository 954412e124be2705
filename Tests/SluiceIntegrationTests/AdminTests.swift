import Foundation
import Testing

/// The admin listener and the access log over loopback: `/metrics` read by Prometheus's own
/// parser, `/connections` against the traffic sent, `DELETE`, health and readiness.
@Suite("Admin listener and access log")
struct AdminTests {
    /// Five 9-byte text messages each way, then a close 1000 from the client: the exact wire
    /// bytes are known (client frames are masked: 2 + 4 + 9 = 15 bytes; backend frames 2 + 9).
    static let messages = (0..<5).map { "message-\($0)" }

    @Test("/metrics, parsed by prometheus_client, counts exactly the frames, messages, bytes and closes sent")
    func metricsMatchTraffic() async throws {
        let backend = try await PythonPeer(["backend", "echo"])
        let gateway = try await TestGateway.relay(to: "ws://127.0.0.1:\(backend.port)", top: ["admin: { address: 127.0.0.1:0 }"])
        let session = try PythonSession()
        #expect(try await session.open("a", gateway.url())["status"] as? Int == 101)
        for message in Self.messages {
            #expect(try await session.send(["op": "send", "id": "a", "data": message])["echo"] as? String == message)
        }
        // Live connections are counted before they close.
        let live = try await session.metrics(gateway.adminURL("/metrics"))
        #expect(live.value("sluice_websocket_messages_total", ["route": "ws", "direction": "client_to_backend"]) == 5)
        #expect(live.value("sluice_websocket_bytes_total", ["route": "ws", "direction": "client_to_backend"]) == 75)
        #expect(live.value("sluice_websockets_active", ["route": "ws"]) == 1)

        let closed = try await session.send(["op": "close", "id": "a", "code": 1000])
        #expect(closed["close_code"] as? Int == 1000)
        #expect(await gateway.eventually { gateway.gateway.registry.count == 0 })
        let _ = try await session.open("missing", gateway.url("/nowhere"))
        let metrics = try await session.metrics(gateway.adminURL("/metrics"))
        let up = ["route": "ws", "direction": "client_to_backend"], down = ["route": "ws", "direction": "backend_to_client"]
        #expect(metrics.value("sluice_websocket_messages_total", up) == 5)
        #expect(metrics.value("sluice_websocket_messages_total", down) == 5)
        #expect(metrics.value("sluice_websocket_frames_total", up) == 6)
        #expect(metrics.value("sluice_websocket_frames_total", down) == 6)
        #expect(metrics.value("sluice_websocket_bytes_total", up) == 75 + 8)
        #expect(metrics.value("sluice_websocket_bytes_total", down) == 55 + 4)
        #expect(metrics.value("sluice_websocket_closes_total", ["route": "ws", "code": "1000", "initiator": "client"]) == 1)
        #expect(metrics.value("sluice_websocket_upgrades_total", ["route": "ws", "result": "ok"]) == 1)
        #expect(metrics.value("sluice_websockets_active", ["route": "ws"]) == 0)
        #expect(metrics.value("sluice_http_requests_total", ["route": "none", "status": "404"]) == 1)
        #expect(metrics.value("sluice_connections_accepted_total", ["listener": "plain"]) == 2)
        #expect(metrics.value("sluice_websocket_duration_seconds_count", ["route": "ws"]) == 1)
        #expect(metrics.value("sluice_upstream_connect_seconds_count", ["route": "ws"]) == 1)
        #expect(metrics.value("sluice_upstream_handshake_seconds_count", ["route": "ws"]) == 1)
        #expect(metrics.value("process_resident_memory_bytes") > 1_000_000)
        #expect(metrics.value("process_open_fds") > 3)
        #expect(metrics.has("process_cpu_seconds_total"))
        session.stop()
        await gateway.stop()
        backend.stop()
    }

    @Test("/connections lists live WebSockets with their traffic; filters, sort, one by id; DELETE closes with 1008 and 1001")
    func connections() async throws {
        let record = Scratch.path("sluice-closes-")
        let backend = try await PythonPeer(["backend", "record-close", record])
        let gateway = try await TestGateway.relay(to: "ws://127.0.0.1:\(backend.port)", top: ["admin: { address: 127.0.0.1:0 }"])
        let session = try PythonSession()
        #expect(try await session.open("quiet", gateway.url("/ws/quiet"), subprotocols: ["chat"])["status"] as? Int == 101)
        #expect(try await session.open("busy", gateway.url("/ws/busy"))["status"] as? Int == 101)
        try await session.send(["op": "send", "id": "quiet", "data": "message-0"])
        for message in Self.messages { try await session.send(["op": "send", "id": "busy", "data": message]) }

        let list = try await json(session, gateway.adminURL("/connections?sort=bytes"))
        #expect(list["total"] as? Int == 2)
        let entries = try #require(list["connections"] as? [[String: Any]])
        #expect(entries.count == 2)
        let busy = try #require(entries.first)
        #expect(busy["route"] as? String == "ws")
        #expect(busy["listener"] as? String == "plain")
        #expect(busy["client"] as? String == "127.0.0.1")
        #expect(busy["backend"] as? String == "ws://127.0.0.1:\(backend.port)")
        #expect(busy["state"] as? String == "open")
        let upstream = try #require(busy["client_to_backend"] as? [String: Any])
        let downstream = try #require(busy["backend_to_client"] as? [String: Any])
        #expect(upstream["messages"] as? Int == 5 && upstream["bytes"] as? Int == 75 && upstream["frames"] as? Int == 5)
        #expect(downstream["messages"] as? Int == 5 && downstream["bytes"] as? Int == 55)
        let quiet = entries[1]
        #expect((quiet["client_to_backend"] as? [String: Any])?["messages"] as? Int == 1)
        #expect(quiet["subprotocol"] as? String == "chat")

        let limited = try await json(session, gateway.adminURL("/connections?limit=1&sort=bytes&route=ws&client=127.0.0.1"))
        #expect(limited["total"] as? Int == 2)
        #expect((limited["connections"] as? [[String: Any]])?.count == 1)
        #expect(try await json(session, gateway.adminURL("/connections?route=other"))["total"] as? Int == 0)
        let bad = try await session.send(["op": "http", "url": gateway.adminURL("/connections?sort=colour")])
        #expect(bad["status"] as? Int == 400)

        let quietID = try #require(quiet["id"] as? Int)
        let one = try await json(session, gateway.adminURL("/connections/\(quietID)"))
        #expect(one["id"] as? Int == quietID)
        let deleted = try await session.send(["op": "http", "url": gateway.adminURL("/connections/\(quietID)"), "method": "DELETE"])
        #expect(deleted["status"] as? Int == 202)
        let kicked = try await session.send(["op": "wait-close", "id": "quiet"])
        #expect(kicked["close_code"] as? Int == 1008)
        #expect(await gateway.eventually { (try? String(contentsOfFile: record, encoding: .utf8))?.contains("1001") == true })
        // The other connection is untouched.
        #expect(try await session.send(["op": "send", "id": "busy", "data": "still"])["echo"] as? String == "still")
        let gone = try await session.send(["op": "http", "url": gateway.adminURL("/connections/\(quietID)"), "method": "DELETE"])
        #expect(gone["status"] as? Int == 404)
        session.stop()
        await gateway.stop()
        backend.stop()
        try? FileManager.default.removeItem(atPath: record)
    }

    @Test("a bearer token guards /metrics and /connections but not /healthz and /readyz; /readyz turns 503 while draining")
    func tokenHealthAndReadiness() async throws {
        let tokenFile = Scratch.path("sluice-token-")
        let token = "s3cret-admin-token-0123456789"
        try token.write(toFile: tokenFile, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(atPath: tokenFile) }
        let gateway = try await TestGateway.relay(
            to: "builtin:echo", websocket: ["close_timeout: 30s"], top: ["admin: { address: 127.0.0.1:0, token_file: \(tokenFile) }"]
        )
        let session = try PythonSession()
        #expect(try await session.send(["op": "http", "url": gateway.adminURL("/metrics")])["status"] as? Int == 401)
        let wrong = try await session.send(["op": "http", "url": gateway.adminURL("/connections"), "headers": ["Authorization": "Bearer nope"]])
        #expect(wrong["status"] as? Int == 401)
        #expect((wrong["headers"] as? [String: String])?["www-authenticate"]?.hasPrefix("Bearer") == true)
        #expect(try await session.metrics(gateway.adminURL("/metrics"), token: token).has("process_open_fds"))
        #expect(try await session.send(["op": "http", "url": gateway.adminURL("/healthz")])["status"] as? Int == 200)
        #expect(try await session.send(["op": "http", "url": gateway.adminURL("/readyz")])["status"] as? Int == 200)

        // A client that never answers the gateway's close keeps the drain going until it leaves
        // (after 25 s; close_timeout is 30 s): the readiness and health requests below must land
        // inside it on a loaded machine (where 10 s was once not enough, and the drain's end took
        // the admin listener with it).
        let port = gateway.port("plain")
        let stalled = Task { _ = try await PythonPeer.run(["raw-client", "stall", "127.0.0.1", "\(port)", #"{"path": "/ws", "seconds": 25}"#]) }
        #expect(await gateway.eventually(.seconds(30)) { gateway.gateway.registry.count == 1 })
        let shutdown = Task { await gateway.gateway.shutdown(drainTimeout: .seconds(45)) }
        #expect(try await gateway.eventually {
            try await session.send(["op": "http", "url": gateway.adminURL("/readyz")])["status"] as? Int == 503
        })
        #expect(try await session.send(["op": "http", "url": gateway.adminURL("/healthz")])["status"] as? Int == 200)
        await shutdown.value
        try? await stalled.value
        session.stop()
    }

    @Test("the access log has one JSON line per request and per WebSocket, with totals and no secrets")
    func accessLog() async throws {
        let logFile = Scratch.path("sluice-access-", suffix: ".log")
        defer { try? FileManager.default.removeItem(atPath: logFile) }
        let backend = try await PythonPeer(["backend", "echo"])
        let gateway = try await TestGateway.relay(
            to: "ws://127.0.0.1:\(backend.port)", route: ["limits: { max_websockets_per_ip: 1 }"], top: ["access_log: \(logFile)"]
        )
        let session = try PythonSession()
        let secretHeaders = ["Cookie": "session=cookie-secret-1", "Authorization": "Bearer header-secret-2"]
        #expect(try await session.open("a", gateway.url("/ws/room?token=query-secret-3"), headers: secretHeaders)["status"] as? Int == 101)
        for message in Self.messages { try await session.send(["op": "send", "id": "a", "data": message]) }
        #expect(try await session.open("refused", gateway.url())["status"] as? Int == 429)
        try await session.send(["op": "close", "id": "a", "code": 4001, "reason": "done here"])
        _ = try await session.send(["op": "http", "url": "http://127.0.0.1:\(gateway.port("plain"))/nothing?password=query-secret-4"])
        #expect(await gateway.eventually {
            ((try? String(contentsOfFile: logFile, encoding: .utf8)) ?? "").split(separator: "\n").count >= 3
        })
        await gateway.stop()
        backend.stop()
        session.stop()

        let text = try String(contentsOfFile: logFile, encoding: .utf8)
        for secret in ["cookie-secret-1", "header-secret-2", "query-secret-3", "query-secret-4"] {
            #expect(!text.contains(secret), "\(secret) leaked into the access log")
        }
        let lines = try text.split(separator: "\n").map { line in
            try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any], "not JSON: \(line)")
        }
        let websocket = try #require(lines.first { $0["type"] as? String == "websocket" })
        #expect(websocket["route"] as? String == "ws")
        #expect(websocket["path"] as? String == "/ws/room")
        #expect(websocket["client"] as? String == "127.0.0.1")
        #expect(websocket["client_messages"] as? Int == 5)
        #expect(websocket["backend_messages"] as? Int == 5)
        #expect(websocket["client_bytes"] as? Int == 75 + 2 + 4 + 2 + 9)
        #expect(websocket["close_code"] as? Int == 4001)
        #expect(websocket["close_reason"] as? String == "done here")
        #expect(websocket["closed_by"] as? String == "client")
        #expect((websocket["duration_ms"] as? Double).map { $0 > 0 } == true)
        let refused = try #require(lines.first { $0["status"] as? Int == 429 })
        #expect(refused["rejection"] as? String == "max_websockets_per_ip")
        let missing = try #require(lines.first { $0["status"] as? Int == 404 })
        #expect(missing["path"] as? String == "/nothing")
        #expect(missing["method"] as? String == "GET")
        #expect(missing["type"] as? String == "http")
    }

    private func json(_ session: PythonSession, _ url: String) async throws -> [String: Any] {
        let answer = try await session.send(["op": "http", "url": url])
        let body = try #require(answer["body"] as? String, "\(answer)")
        return try #require(try JSONSerialization.jsonObject(with: Data(body.utf8)) as? [String: Any], "\(body)")
    }
}
