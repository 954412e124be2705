import Foundation
import SluiceConfig
import Testing

/// HTTP/2 over loopback with clients no one here wrote: curl, nghttp and h2load (nghttp2),
/// Python's `h2` driving raw frames (`Peers/h2_peer.py`), headless Chromium. Requests and
/// WebSockets (RFC 8441) reach HTTP/1.1 backends through the same admission and relay as
/// HTTP/1.1; the connection-level defences hold; GOAWAY on drain and reload leaves the live
/// WebSockets working.
@Suite("HTTP/2 over loopback")
struct HTTP2Tests {
    static let peer = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Peers/h2_peer.py").path

    /// A gateway with a TLS listener (h2 and http/1.1) and a plain one (http/1.1 and h2c), an
    /// admin listener, an access log, and routes: `/echo` and `/guarded` (WebSocket echo; the
    /// latter origin-checked, one subprotocol, one WebSocket per address), `/flood` (a backend
    /// that sends `flood` bytes), `/app` (an HTTP/1.1 backend), `/timed` (the same, with short
    /// timeouts), `/sick` (two backends on that server, ejected at their first 5xx), `/` the demo page.
    final class Setup: @unchecked Sendable {
        let gateway: TestGateway
        let echo: PythonPeer
        let flood: PythonPeer
        let http: PythonPeer
        let accessLog: String
        let yaml: (String) -> String

        /// `routes`: more routes, in the routes block's YAML, ahead of the catch-all demo;
        /// `engine`: the HTTP/2 layer both listeners serve with.
        init(http2: String = "", flood bytes: Int = 64 << 20, routes: String = "", engine: HTTP2Limits.HTTP2Engine = .wire) async throws {
            let directory = try Scratch.directory("sluice-h2-")
            echo = try await PythonPeer(["backend", "echo"])
            flood = try await PythonPeer(["backend", "flood", "\(bytes)"])
            http = try await PythonPeer(["http-backend", "one"])
            accessLog = "\(directory)/access.log"
            let (echoPort, floodPort, httpPort, log) = (echo.port, flood.port, http.port, accessLog)
            yaml = { http2Block in
                """
                admin: { address: 127.0.0.1:0 }
                access_log: \(log)
                shutdown: { readiness_delay: 0s, drain_window: 1s, deadline: 30s }
                listeners:
                  - name: tls
                    address: 127.0.0.1:0
                    tls: { certificates: [ { cert: \(directory)/dev.pem, key: \(directory)/dev-key.pem, generate_if_missing: true } ] }
                    http2: { engine: \(engine.rawValue)\(http2Block.isEmpty ? "" : ", " + http2Block) }
                  - name: plain
                    address: 127.0.0.1:0
                    http: { versions: [http/1.1, h2] }
                    http2: { engine: \(engine.rawValue) }
                routes:
                  - name: echo
                    match: { path_prefix: /echo }
                    backends: ["ws://127.0.0.1:\(echoPort)"]
                    websocket: { close_timeout: 2s }
                  - name: guarded
                    match: { path_prefix: /guarded }
                    backends: ["ws://127.0.0.1:\(echoPort)"]
                    origin: { allowed: ["https://app.test"], allow_missing: false }
                    websocket: { subprotocols: [chat], close_timeout: 2s }
                    limits: { max_websockets_per_ip: 1 }
                  - name: flood
                    match: { path_prefix: /flood }
                    backends: ["ws://127.0.0.1:\(floodPort)"]
                  - name: app
                    match: { path_prefix: /app }
                    backends: ["http://127.0.0.1:\(httpPort)"]
                  - name: timed
                    match: { path_prefix: /timed }
                    backends: ["http://127.0.0.1:\(httpPort)"]
                    http: { response_timeout: 3s, idle_timeout: 3s }
                  - name: sick
                    match: { path_prefix: /sick }
                    backends: ["http://127.0.0.1:\(httpPort)/a", "http://127.0.0.1:\(httpPort)/b"]
                    balance: { max_fails: 1, plain_errors_fail: true }
                \(routes)
                  - name: demo
                    match: { path_prefix: / }
                    builtin: demo
                """
            }
            gateway = try await TestGateway(yaml: yaml(http2), baseDirectory: directory)
        }

        var tlsPort: Int { gateway.port("tls") }
        var plainPort: Int { gateway.port("plain") }

        func h2(_ scenario: String, _ options: [String: Any] = [:], port: Int? = nil, timeout: TimeInterval = 120) async throws -> [String: Any] {
            let json = String(decoding: try JSONSerialization.data(withJSONObject: options), as: UTF8.self)
            return try await PythonPeer.run([scenario, "127.0.0.1", "\(port ?? tlsPort)", json], script: HTTP2Tests.peer, timeout: timeout)
        }

        /// A request to the HTTP backend's `path` (a `/delay`) reset once the backend has it, then
        /// `then` on the same h2 connection 2.5 s later (`Peers/h2_peer.py cancel-then-request`).
        func cancelThenRequest(_ path: String, then: String) async throws -> [String: Any] {
            try await h2("cancel-then-request", [
                "path": path, "ready": "http://127.0.0.1:\(http.port)/stats", "ready_key": "delay", "wait": 2.5, "then": then,
            ])
        }

        /// The sum of the samples of `name` whose labels include `labels`.
        func metric(_ name: String, _ labels: [String: String] = [:]) -> Double {
            String(decoding: gateway.gateway.metrics.render(), as: UTF8.self).split(separator: "\n").filter { line in
                line.hasPrefix(name + "{") || line.hasPrefix(name + " ")
            }.filter { line in
                labels.allSatisfy { line.contains("\($0.key)=\"\($0.value)\"") }
            }.compactMap { $0.split(separator: " ").last.flatMap { Double($0) } }.reduce(0, +)
        }

        /// The access log's lines of `type`.
        func logLines(_ type: String) -> [[String: Any]] {
            ((try? String(contentsOfFile: accessLog, encoding: .utf8)) ?? "").split(separator: "\n").compactMap {
                try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any]
            }.filter { $0["type"] as? String == type }
        }

        func stop() async {
            await gateway.stop()
            echo.stop()
            flood.stop()
            http.stop()
        }
    }

    @Test(
        "curl, nghttp and h2load over h2 (ALPN) and h2c (prior knowledge): requests reach the HTTP/1.1 backend with forwarding fields over pooled connections; h1 clients share the listeners",
        arguments: HTTP2Limits.HTTP2Engine.allCases
    )
    func requests(engine: HTTP2Limits.HTTP2Engine) async throws {
        let setup = try await Setup(engine: engine)
        let tls = "https://127.0.0.1:\(setup.tlsPort)"
        let plain = "http://127.0.0.1:\(setup.plainPort)"
        let get = try await Curl.run(["-k", "--http2", "\(tls)/app/a?q=1"])
        let post = try await Curl.run(["-k", "--http2", "-d", "hello", "\(tls)/app/post"])
        // No length: the body goes to the backend in HTTP/1.1 chunks.
        let streamed = try await Curl.run([], shell: "head -c 300000 /dev/zero | curl -s -k --http2 -T - -X POST \(tls)/app/upload")
        let h2c = try await Curl.run(["--http2-prior-knowledge", "\(plain)/app/b"])
        let h1 = try await Curl.run(["--http1.1", "\(plain)/app/c"])
        let h1OverTLS = try await Curl.run(["-k", "--http1.1", "\(tls)/app/d"])
        let nghttp = try await Curl.run([], shell: "nghttp -nv \(tls)/app/e 2>&1")
        let h2load = try await Curl.run([], shell: "h2load -n 400 -c 4 -m 10 \(tls)/app/f 2>&1")
        // One request at a time on one h2 connection: every one reuses the pooled backend
        // connection (at most one new per event loop, for h2load and for the count itself).
        let connectionsBefore = try await Curl.run(["--http1.1", "\(plain)/app/stats"]).json?["connections"] as? Int
        let sequential = try await Curl.run([], shell: "h2load -n 20 -c 1 -m 1 \(plain)/app/g 2>&1")
        let connectionsAfter = try await Curl.run(["--http1.1", "\(plain)/app/stats"]).json?["connections"] as? Int
        let versions = (setup.metric("sluice_http_connections_total", ["version": "h2"]), setup.metric("sluice_http_connections_total", ["version": "http/1.1"]))
        let counted = setup.metric("sluice_http_requests_total", ["route": "app", "status": "200"])
        let requestLines = setup.logLines("http")
        await setup.stop()

        #expect(get.status == 200, "\(get)")
        let seen = try #require(get.json?["headers"] as? [String: String], "\(get.body)")
        #expect(get.json?["path"] as? String == "/app/a?q=1")
        #expect(seen["x-forwarded-proto"] == "https")
        #expect(seen["x-forwarded-for"] == "127.0.0.1")
        #expect(seen["host"] == "127.0.0.1:\(setup.tlsPort)", "the backend's Host is the client's :authority")
        #expect(seen["via"] == "1.1 sluice")
        #expect(get.headers["via"] == "1.1 sluice")
        #expect(post.json?["received"] as? Int == 5, "\(post.body)")
        #expect((streamed.json?["received"] as? Int) == 300_000, "\(streamed.body)")
        #expect((streamed.json?["headers"] as? [String: String])?["transfer-encoding"] == "chunked")
        #expect(h2c.status == 200 && h1.status == 200 && h1OverTLS.status == 200, "\(h2c.status) \(h1.status) \(h1OverTLS.status)")
        #expect(nghttp.body.contains("SETTINGS_ENABLE_CONNECT_PROTOCOL(0x08):1"), "\(nghttp.body.prefix(2000))")
        #expect(nghttp.body.contains(":status: 200"))
        #expect(h2load.body.contains("400 succeeded, 0 failed, 0 errored"), "\(h2load.body)")
        #expect(sequential.body.contains("20 succeeded, 0 failed"), "\(sequential.body)")
        let opened = (connectionsAfter ?? 99) - (connectionsBefore ?? 0)
        #expect(opened <= 2, "20 sequential h2 requests opened \(opened) backend connections: the pool was not reused")
        #expect(versions.0 >= 8 && versions.1 >= 2, "\(versions)")
        // Every request counted once, over h2 and h1 alike: seven by curl and nghttp, h2load's
        // 400 and 20, the two reads of the backend's count.
        #expect(counted == 429, "\(counted)")
        #expect(requestLines.contains { $0["protocol"] as? String == "HTTP/2" && $0["path"] as? String == "/app/a" })
    }

    @Test(
        "a stream reset while its backend is still answering: the answer is read and dropped, and the next request on the connection reuses that backend connection",
        arguments: HTTP2Limits.HTTP2Engine.allCases
    )
    func cancelledStreamKeepsBackendConnection(engine: HTTP2Limits.HTTP2Engine) async throws {
        let setup = try await Setup(engine: engine)
        // The backend answers 0.5 s after it has the request; the client resets the stream once
        // the backend has it, and asks for the backend's connection count 2.5 s later, on the
        // same h2 connection (so on the same event loop's pool).
        let result = try await setup.cancelThenRequest("/app/delay?s=0.5", then: "/app/stats")
        await setup.stop()
        #expect(result["first_status"] is NSNull, "\(result)")
        #expect(result["status"] as? Int == 200, "\(result)")
        let stats = try JSONSerialization.jsonObject(with: Data(((result["body"] as? String) ?? "").utf8)) as? [String: Any]
        // The backend counts its connections; the peer's own reads of the count beside Sluice
        // are in the last one it read before the reset.
        let before = (result["ready"] as? [String: Any])?["connections"] as? Int
        #expect(before != nil && stats?["connections"] as? Int == before, "the cancelled request's backend connection served the next one: \(result)")
    }

    @Test(
        "a 503 that comes after its client reset the stream still counts against the backend: with max_fails 1 it is ejected",
        arguments: HTTP2Limits.HTTP2Engine.allCases
    )
    func cancelledFailureCountsTowardHealth(engine: HTTP2Limits.HTTP2Engine) async throws {
        let setup = try await Setup(engine: engine)
        // The backend fails 0.5 s after it has the request; the client has reset the stream by
        // then, so the 503 is read by the drain, not by the exchange.
        let result = try await setup.cancelThenRequest("/sick/delay?s=0.5&code=503", then: "/sick/stats")
        // (The drain has read the 503 by the time the second request is answered, unless the
        // machine is slow enough that the backend's answer came later: waited for, bounded.)
        _ = await setup.gateway.eventually { setup.metric("sluice_backend_ejections_total", ["route": "sick"]) >= 1 }
        let ejections = setup.metric("sluice_backend_ejections_total", ["route": "sick"])
        await setup.stop()
        #expect(result["first_status"] is NSNull, "the first stream was reset before its answer: \(result)")
        #expect(ejections == 1, "the 503 read after the reset ejected its backend (max_fails 1, plain_errors_fail): \(ejections)")
        #expect(result["status"] as? Int == 200, "the other backend answers the next request: \(result)")
    }

    @Test(
        "timeouts per stream on one connection: two slow backends get 504s, a stalled response body is reset, a quick request beside them is answered, and the connection serves on",
        arguments: HTTP2Limits.HTTP2Engine.allCases
    )
    func streamTimeouts(engine: HTTP2Limits.HTTP2Engine) async throws {
        let setup = try await Setup(engine: engine)
        let tls = "https://127.0.0.1:\(setup.tlsPort)"
        // One connection (nghttp opens one per authority), five streams at once. The slow
        // answers and the stall take 10 s against the route's 3 s; the quick ones have 3 s to
        // come from a Python backend on a loaded machine.
        let streams = try await Curl.run([], shell: "nghttp -nv '\(tls)/timed/delay?s=10' '\(tls)/timed/delay?s=10&2' '\(tls)/timed/stall?s=10' \(tls)/timed/a \(tls)/timed/b 2>&1", timeout: 60)
        let after = try await Curl.run([], shell: "nghttp -nv '\(tls)/timed/delay?s=10' \(tls)/timed/c 2>&1", timeout: 60)
        let lines = setup.logLines("http")
        await setup.stop()

        let statuses = streams.body.components(separatedBy: "\n").filter { $0.contains(":status:") }
        #expect(statuses.filter { $0.contains("504") }.count == 2, "\(statuses)\n\(streams.body.suffix(3000))")
        #expect(statuses.filter { $0.contains("200") }.count == 3, "\(statuses)")
        #expect(streams.body.contains("recv RST_STREAM"), "the stalled body's stream is reset: \(streams.body.suffix(3000))")
        #expect(after.body.components(separatedBy: "\n").filter { $0.contains(":status: 504") }.count == 1, "\(after.body.suffix(2000))")
        #expect(after.body.components(separatedBy: "\n").filter { $0.contains(":status: 200") }.count == 1)
        let timed = lines.filter { ($0["path"] as? String)?.hasPrefix("/timed/") == true }
        #expect(timed.filter { $0["status"] as? Int == 504 }.count == 3, "\(timed)")
    }

    @Test("1 GiB up and 1 GiB down over h2 with the gateway's memory bounded; server-sent events arrive one by one", .loadTest, arguments: HTTP2Limits.HTTP2Engine.allCases)
    func largeBodies(engine: HTTP2Limits.HTTP2Engine) async throws {
        let setup = try await Setup(engine: engine)
        let plain = "http://127.0.0.1:\(setup.plainPort)"
        let before = residentBytes()
        let upload = try await Curl.run([], shell: "head -c 1073741824 /dev/zero | curl -s --http2-prior-knowledge --max-time 600 -T - \(plain)/app/upload", timeout: 600)
        let afterUpload = residentBytes()
        let download = try await Curl.run([], shell: "curl -s --http2-prior-knowledge --max-time 600 -o /dev/null -w '%{http_code} %{size_download} %{http_version}' '\(plain)/app/download?bytes=1073741824'", timeout: 600)
        let afterDownload = residentBytes()
        let events = try await setup.h2("sse-acked", ["path": "/app/sse-acked", "backend": setup.http.port])
        await setup.stop()
        #expect(upload.json?["received"] as? Int == 1 << 30, "\(upload.body)")
        #expect(download.body == "200 1073741824 2", "\(download.body)")
        #expect(afterUpload - before < 128 << 20, "RSS grew \((afterUpload - before) >> 20) MiB on upload")
        #expect(afterDownload - before < 128 << 20, "RSS grew \((afterDownload - before) >> 20) MiB on download")
        #expect(events["seen"] as? Int == 4, "\(events)")
        #expect(events["acked"] as? [Bool] == [true, true, true, true], "events were held back: \(events)")
    }

    @Test(
        "RFC 8441: an extended CONNECT becomes an RFC 6455 upgrade to the backend and a relayed WebSocket; /connections and the access log say h2",
        arguments: HTTP2Limits.HTTP2Engine.allCases
    )
    func websocket(engine: HTTP2Limits.HTTP2Engine) async throws {
        let setup = try await Setup(engine: engine)
        let result = try await setup.h2("ws", [
            "path": "/echo/room", "messages": ["hello", "headers?"], "close_code": 4000,
            "admin": setup.gateway.adminURL("/connections"),
        ])
        let closed = await setup.gateway.eventually { setup.gateway.gateway.registry.count == 0 }
        let line = setup.logLines("websocket").first
        await setup.stop()

        #expect(result["alpn"] as? String == "h2")
        #expect(result["enable_connect_protocol"] as? Int == 1)
        #expect(result["status"] as? Int == 200, "\(result)")
        let echoes = try #require(result["echoes"] as? [String], "\(result)")
        #expect(echoes.first == "hello")
        // What the backend saw: an ordinary RFC 6455 upgrade with Sluice's forwarding fields.
        let seen = try #require(try JSONSerialization.jsonObject(with: Data((echoes.last ?? "").utf8)) as? [String: String], "\(echoes)")
        #expect(seen["upgrade"]?.lowercased() == "websocket")
        #expect(seen["sec-websocket-version"] == "13")
        #expect(Data(base64Encoded: seen["sec-websocket-key"] ?? "")?.count == 16)
        #expect(seen[":path"] == "/echo/room")
        #expect(seen["x-forwarded-proto"] == "https")
        #expect(seen["via"] == "1.1 sluice")
        #expect(result["close_code"] as? Int == 4000)
        #expect(result["ended_cleanly"] as? Bool == true, "the stream ends with END_STREAM both ways: \(result)")
        let listing = try #require(result["connections"] as? [String: Any])
        let open = try #require((listing["connections"] as? [[String: Any]])?.first, "\(listing)")
        #expect(open["protocol"] as? String == "h2")
        #expect(closed)
        #expect(line?["protocol"] as? String == "h2")
        #expect(line?["status"] as? Int == 200)
        #expect(line?["close_code"] as? Int == 4000)
    }

    @Test(
        "RFC 8441: WebSocket frames a client sends before the 200 reach the backend after the upgrade, first and in order",
        arguments: HTTP2Limits.HTTP2Engine.allCases
    )
    func framesBeforeTheAnswer(engine: HTTP2Limits.HTTP2Engine) async throws {
        let setup = try await Setup(engine: engine)
        let result = try await setup.h2("ws", ["path": "/echo/early", "early": ["one", "two", "three"], "messages": ["after"], "close_code": 1000])
        let closed = await setup.gateway.eventually { setup.gateway.gateway.registry.count == 0 }
        await setup.stop()
        #expect(result["status"] as? Int == 200, "\(result)")
        #expect(result["early_echoes"] as? [String] == ["one", "two", "three"], "\(result)")
        #expect(result["echoes"] as? [String] == ["after"], "\(result)")
        #expect(result["close_code"] as? Int == 1000, "\(result)")
        #expect(closed)
    }

    @Test(
        "a backend that does not answer an extended CONNECT's handshake in time gets the stream a 504, within the handshake timeout; the connection serves on",
        arguments: HTTP2Limits.HTTP2Engine.allCases
    )
    func handshakeTimeout(engine: HTTP2Limits.HTTP2Engine) async throws {
        let silent = try await PythonPeer(["backend", "slow", "30"])
        defer { silent.stop() }
        let setup = try await Setup(routes: """
              - name: silent
                match: { path_prefix: /silent }
                backends: ["ws://127.0.0.1:\(silent.port)"]
                websocket: { handshake_timeout: 500ms }
            """, engine: engine)
        let started = Date()
        let refused: [String: Any], after: [String: Any], waited: TimeInterval
        do {
            refused = try await setup.h2("ws", ["path": "/silent"])
            waited = Date().timeIntervalSince(started)
            after = try await setup.h2("ws", ["path": "/echo", "messages": ["still here"]])
        } catch {
            await setup.stop()
            throw error
        }
        let timeouts = setup.metric("sluice_websocket_upgrades_total", ["route": "silent", "result": "backend_timeout"])
        let logged = setup.logLines("http").first { $0["path"] as? String == "/silent" }
        await setup.stop()
        #expect(refused["status"] as? Int == 504, "\(refused)")
        // Bounded by the backend's own 30 s, which it never reaches: as the gateway measured it
        // (from the stream's HEADERS to its answer; the client's own figure includes starting
        // Python beside the whole suite).
        let duration = logged?["duration_ms"] as? Double ?? .infinity
        #expect(logged?["status"] as? Int == 504 && duration < 10_000, "the 504 came after \(duration) ms (\(waited) s for the client): \(String(describing: logged))")
        #expect(timeouts >= 1)
        #expect((after["echoes"] as? [String])?.first == "still here", "\(after)")
    }

    @Test(
        "twenty WebSockets on one h2 connection and HTTP/1.1 WebSockets to the same backend at once",
        arguments: HTTP2Limits.HTTP2Engine.allCases
    )
    func mixed(engine: HTTP2Limits.HTTP2Engine) async throws {
        let setup = try await Setup(engine: engine)
        async let many = setup.h2("ws-many", ["streams": 20, "messages": 10])
        async let h1a = PythonPeer.run(["client", "echo", "wss://127.0.0.1:\(setup.tlsPort)/echo", #"{"big": 1048576}"#])
        async let h1b = PythonPeer.run(["client", "echo", "ws://127.0.0.1:\(setup.plainPort)/echo", #"{"big": 1048576}"#])
        let (h2Result, first, second) = try await (many, h1a, h1b)
        let drained = await setup.gateway.eventually { setup.gateway.gateway.registry.count == 0 }
        let closes = (setup.metric("sluice_websocket_closes_total", ["code": "1000"]), setup.metric("sluice_websocket_closes_total", ["code": "4000"]))
        await setup.stop()
        #expect(h2Result["statuses"] as? [Int] == Array(repeating: 200, count: 20), "\(h2Result)")
        #expect(h2Result["intact"] as? Bool == true)
        #expect(h2Result["close_codes"] as? [Int] == Array(repeating: 1000, count: 20))
        for h1 in [first, second] {
            #expect(h1["checks"] as? [Bool] == [true, true, true, true, true], "\(h1)")
            #expect(h1["close_code"] as? Int == 4000)
        }
        #expect(drained)
        #expect(closes.0 == 20 && closes.1 == 2, "\(closes)")
    }

    @Test(
        "the same admission as HTTP/1.1: Origin, subprotocols and per-address caps apply to extended CONNECT; a backend that answers it without upgrading gets the client a 502",
        arguments: HTTP2Limits.HTTP2Engine.allCases
    )
    func admission(engine: HTTP2Limits.HTTP2Engine) async throws {
        let setup = try await Setup(engine: engine)
        let noOrigin = try await setup.h2("ws", ["path": "/guarded", "subprotocols": ["chat"]])
        let wrongProtocol = try await setup.h2("ws", ["path": "/guarded", "subprotocols": ["other"], "origin": "https://app.test"])
        let good = try await setup.h2("ws", ["path": "/guarded", "subprotocols": ["other", "chat"], "origin": "https://app.test"])
        let two = try await setup.h2("ws-many", ["path": "/guarded", "streams": 2, "messages": 1, "subprotocols": ["chat"], "origin": "https://app.test"])
        // A backend that answers the upgrade with a 200 of its own did not upgrade: over h2 that
        // 200 would read as the WebSocket open (RFC 8441 §5), so the client gets a 502.
        let notUpgraded = try await setup.h2("ws", ["path": "/app/ws"])
        let refusals = (
            setup.metric("sluice_websocket_upgrades_total", ["route": "guarded", "result": "origin_rejected"]),
            setup.metric("sluice_limit_rejections_total", ["limit": "max_websockets_per_ip"])
        )
        await setup.stop()
        #expect(noOrigin["status"] as? Int == 403, "\(noOrigin)")
        #expect(wrongProtocol["status"] as? Int == 400, "\(wrongProtocol)")
        #expect((wrongProtocol["body"] as? String)?.contains("allowed: chat") == true)
        #expect(good["status"] as? Int == 200, "\(good)")
        #expect((good["headers"] as? [String: String])?["sec-websocket-protocol"] == "chat")
        #expect(good["echoes"] as? [String] == ["hello"])
        #expect(two["statuses"] as? [Int] == [200, 429], "\(two)")
        #expect(notUpgraded["status"] as? Int == 502, "\(notUpgraded)")
        #expect(refusals.0 == 1 && refusals.1 == 1, "\(refusals)")
    }

    @Test(
        "flow control end to end: a client that grants no window stops Sluice reading the backend; then every byte arrives",
        arguments: HTTP2Limits.HTTP2Engine.allCases
    )
    func flowControl(engine: HTTP2Limits.HTTP2Engine) async throws {
        let setup = try await Setup(flood: 64 << 20, engine: engine)
        let result = try await setup.h2("stall", ["path": "/flood", "seconds": 3, "admin": setup.gateway.adminURL("/connections")], timeout: 300)
        await setup.stop()
        #expect(result["status"] as? Int == 200, "\(result)")
        // The stream's window (65,535 bytes) is all the client can get while it grants nothing.
        let stalled = try #require(result["received_while_stalled"] as? Int)
        #expect(stalled <= 65_535, "\(result)")
        // The relay read of the 64 MiB only what its buffers and the window hold.
        let read = try #require(result["backend_read_while_stalled"] as? Int)
        #expect(read < 8 << 20, "the gateway read \(read) bytes from the backend for a client that took \(stalled)")
        #expect(result["payload"] as? Int == 64 << 20)
        #expect(result["intact"] as? Bool == true)
        #expect(result["close_code"] as? Int == 1000)
    }

    @Test(
        "a stream reset mid-message ends that WebSocket only: the backend is told, the registry empties, the connection's next stream works",
        arguments: HTTP2Limits.HTTP2Engine.allCases
    )
    func resetMidMessage(engine: HTTP2Limits.HTTP2Engine) async throws {
        let setup = try await Setup(engine: engine)
        let result = try await setup.h2("reset-mid-message", ["path": "/echo"])
        let emptied = await setup.gateway.eventually { setup.gateway.gateway.registry.count == 0 }
        let vanished = setup.metric("sluice_websocket_closes_total", ["route": "echo", "ending": "vanished_mid_frame"])
        await setup.stop()
        #expect(result["status"] as? Int == 200)
        #expect(result["other_status"] as? Int == 200)
        #expect(result["other_echoes"] as? [String] == ["after"])
        #expect(result["goaway"] is NSNull)
        #expect(emptied)
        #expect(vanished == 1, "\(vanished)")
    }

    @Test(
        "frame-level WebSocket cases give the same outcome over RFC 8441 as over an HTTP/1.1 upgrade",
        arguments: HTTP2Limits.HTTP2Engine.allCases
    )
    func frameCases(engine: HTTP2Limits.HTTP2Engine) async throws {
        let setup = try await Setup(engine: engine)
        let overH2 = try await setup.h2("cases", ["path": "/echo"])
        let overH1 = try await setup.h2("cases", ["path": "/echo", "h1": true])
        await setup.stop()
        #expect(overH2.count == 16, "\(overH2.keys.sorted())")
        for (name, outcome) in overH2 {
            let h2 = outcome as? [String: Any]
            let h1 = overH1[name] as? [String: Any]
            #expect(h2 != nil && NSDictionary(dictionary: h2 ?? [:]).isEqual(to: h1 ?? [:]), "\(name): h2 \(String(describing: h2)) h1 \(String(describing: h1))")
        }
        // The relay's own verdicts, the same either way.
        for name in ["unmasked", "reserved-opcode", "reserved-bit", "fragmented-control", "oversized-control", "continuation-without-start", "text-inside-fragments"] {
            #expect((overH2[name] as? [String: Any])?["close_code"] as? Int == 1002, "\(name): \(String(describing: overH2[name]))")
        }
        #expect((overH2["ping"] as? [String: Any])?["pongs"] as? [String] == ["are you there"])
    }

    @Test(
        "defences: stream cap, header list size, rapid reset, CONTINUATION, PING and SETTINGS floods, forbidden fields, idle connections; the gateway serves on",
        arguments: HTTP2Limits.HTTP2Engine.allCases
    )
    func defences(engine: HTTP2Limits.HTTP2Engine) async throws {
        let setup = try await Setup(
            http2: "max_concurrent_streams: 10, max_header_list_size: 4KiB, max_resets: 50, max_control_frames: 50, idle_timeout: 1s", engine: engine
        )
        let streams = try await setup.h2("streams", ["count": 15, "path": "/app/upload"])
        // A client that honours the cap (as h2load does) is served whatever it asks for. On a
        // gateway of its own with the same cap and no short idle timeout: on a loaded machine
        // h2load once paused past 1 s with no stream open and got the idle GOAWAY.
        let capped = try await Setup(http2: "max_concurrent_streams: 10", engine: engine)
        let honoured = try await Curl.run([], shell: "h2load -n 200 -c 1 -m 50 https://127.0.0.1:\(capped.tlsPort)/app/g 2>&1")
        await capped.stop()
        let bigHeader = try await setup.h2("request", ["path": "/app/a", "headers": [["x-big", String(repeating: "a", count: 8192)]]])
        let rapidReset = try await setup.h2("rapid-reset", ["count": 1000])
        let continuation = try await setup.h2("continuation-flood", ["count": 1000])
        let pings = try await setup.h2("ping-flood", ["count": 1000])
        let settings = try await setup.h2("ping-flood", ["count": 1000, "kind": "settings"])
        let connectionField = try await setup.h2("request", ["path": "/app/a", "headers": [["connection", "keep-alive"]]])
        let hostMismatch = try await setup.h2("request", ["path": "/app/a", "headers": [["host", "elsewhere.test"]]])
        let lengthLie = try await setup.h2("request", ["path": "/app/post", "method": "POST", "headers": [["content-length", "3"]], "body": "hello"])
        // A Content-Length on a request whose HEADERS end the stream (no body at all).
        let lengthNoBody = try await setup.h2("request", ["path": "/app/empty", "method": "POST", "headers": [["content-length", "5"]]])
        let idle = try await setup.h2("request", ["path": "/app/a", "linger": 4])
        let after = try await setup.h2("ws", ["path": "/echo"])
        let errors = setup.metric("sluice_http2_connection_errors_total")
        let calm = setup.metric("sluice_http2_connection_errors_total", ["code": "ENHANCE_YOUR_CALM"])
        let malformedCounted = setup.metric("sluice_http_requests_total", ["status": "400"])
        let lines = setup.logLines("http")
        await setup.stop()

        #expect(streams["advertised"] as? Int == 10)
        switch engine {
        case .nio:
            // NIOHTTP2 answers a stream past the advertised cap with a connection error.
            #expect((streams["goaway"] as? [String: Any])?["error"] as? Int == 1, "\(streams)")
            #expect(streams["closed"] as? Bool == true, "\(streams)")
        case .wire:
            // Sluice's layer refuses each stream past the cap (REFUSED_STREAM: the client may
            // send it again) and serves the rest on the same connection.
            #expect(streams["refused"] as? Int == 5 && streams["answered"] as? Int == 10, "\(streams)")
            #expect(streams["goaway"] is NSNull && streams["closed"] as? Bool == false, "\(streams)")
        }
        #expect(honoured.body.contains("200 succeeded, 0 failed, 0 errored"), "\(honoured.body)")
        #expect(bigHeader["status"] is NSNull && bigHeader["closed"] as? Bool == true, "\(bigHeader)")
        #expect(rapidReset["closed"] as? Bool == true, "\(rapidReset)")
        // Cut off long before its thousand (how long depends on how fast it writes).
        #expect((rapidReset["resets_sent"] as? Int ?? 1000) < 1000, "\(rapidReset)")
        #expect(continuation["closed"] as? Bool == true, "\(continuation)")
        #expect(pings["closed"] as? Bool == true, "\(pings)")
        #expect(settings["closed"] as? Bool == true, "\(settings)")
        #expect(connectionField["reset"] as? Int == 1, "a connection-specific field is a malformed request (PROTOCOL_ERROR): \(connectionField)")
        #expect(hostMismatch["status"] as? Int == 400, "\(hostMismatch)")
        #expect(lengthLie["reset"] as? Int == 1, "DATA past the request's Content-Length is a malformed request (PROTOCOL_ERROR): \(lengthLie)")
        #expect(lengthNoBody["reset"] as? Int == 1, "a Content-Length on a request with no body is malformed too: \(lengthNoBody)")
        let lie = lines.first { $0["path"] as? String == "/app/post" }
        let empty = lines.first { $0["path"] as? String == "/app/empty" }
        switch engine {
        case .wire:
            // Reset, and still seen by the operator: access-log lines with a 400, counted.
            #expect(lie?["status"] as? Int == 400 && lie?["rejection"] as? String == "bad_request", "\(String(describing: lie))")
            #expect(empty?["status"] as? Int == 400 && empty?["rejection"] as? String == "bad_request", "\(String(describing: empty))")
            #expect(malformedCounted >= 2, "\(malformedCounted)")
        case .nio:
            // NIOHTTP2 resets them as if the client had gone (a 499 once the head was read).
            #expect(lie?["status"] as? Int == 499, "\(String(describing: lie))")
        }
        #expect(idle["status"] as? Int == 200)
        #expect((idle["goaway"] as? [String: Any])?["error"] as? Int == 0, "an idle connection gets a graceful GOAWAY: \(idle)")
        #expect(idle["closed"] as? Bool == true)
        #expect(after["echoes"] as? [String] == ["hello"], "\(after)")
        #expect(errors >= (engine == .nio ? 6 : 5) && calm >= 3, "\(errors) \(calm)")
    }

    @Test(
        "GOAWAY on reload: a WebSocket on the connection keeps working until it closes; the connection then ends",
        arguments: HTTP2Limits.HTTP2Engine.allCases
    )
    func goAwayOnReload(engine: HTTP2Limits.HTTP2Engine) async throws {
        let setup = try await Setup(engine: engine)
        let watcher = try StreamingPeer(script: Self.peer, arguments: ["goaway-watch", "127.0.0.1", "\(setup.tlsPort)", #"{"path": "/echo", "echoes_after": 5}"#])
        _ = try await watcher.line(startingWith: "OPEN")
        try await Task.sleep(for: .milliseconds(500))
        // A reload that changes the listener's HTTP/2 settings.
        let changed = try ConfigurationLoader.parse(yaml: setup.yaml("max_concurrent_streams: 50"), baseDirectory: NSTemporaryDirectory())
        let reload = await setup.gateway.gateway.reload(to: changed)
        let result = try await watcher.result()
        let emptied = await setup.gateway.eventually { setup.gateway.gateway.registry.count == 0 }
        await setup.stop()
        if case .failure(let failure) = reload { Issue.record("reload failed: \(failure)") }
        #expect((result["goaway"] as? [String: Any])?["error"] as? Int == 0, "\(result)")
        #expect(result["failures"] as? Int == 0)
        #expect(result["in_order"] as? Bool == true)
        #expect((result["echoed_after_goaway"] as? Int ?? 0) >= 5, "the WebSocket went on after GOAWAY: \(result)")
        #expect(result["close_code"] as? Int == 1000)
        #expect(result["connection_closed"] as? Bool == true, "\(result)")
        #expect(emptied)
    }

    @Test(
        "GOAWAY on drain: WebSockets on the connection go on until the drain closes them (1001), then the connection ends",
        arguments: HTTP2Limits.HTTP2Engine.allCases
    )
    func goAwayOnDrain(engine: HTTP2Limits.HTTP2Engine) async throws {
        let setup = try await Setup(engine: engine)
        let watcher = try StreamingPeer(script: Self.peer, arguments: ["goaway-watch", "127.0.0.1", "\(setup.tlsPort)", #"{"path": "/echo", "after": 30, "timeout": 30}"#])
        _ = try await watcher.line(startingWith: "OPEN")
        try await Task.sleep(for: .milliseconds(300))
        await setup.gateway.gateway.drain(stoppingParts: false)
        let result = try await watcher.result()
        // How the gateway says the WebSocket ended (a close that never went out shows here as
        // the drain's deadline or the close timeout).
        let ended = setup.logLines("websocket").map { "\($0["close_code"] ?? "-") \($0["close_reason"] ?? "-") \($0["ending"] ?? "-")" }
        await setup.stop()
        #expect((result["goaway"] as? [String: Any])?["error"] as? Int == 0, "\(result)")
        #expect(result["server_close_code"] as? Int == 1001, "\(result); the gateway's log: \(ended)")
        #expect(result["goaway_before_close"] as? Bool == true, "the client is told GOAWAY before its WebSocket's 1001: \(result)")
        #expect(result["failures"] as? Int == 0)
        #expect(result["in_order"] as? Bool == true)
        #expect(result["connection_closed"] as? Bool == true, "\(result)")
    }

    @Test(
        "headless Chromium loads the demo page over h2 and opens its WebSocket by RFC 8441 on the same connection",
        .enabled(if: FileManager.default.isExecutableFile(atPath: "/usr/bin/chromium"), "needs chromium (apt)"), arguments: HTTP2Limits.HTTP2Engine.allCases
    )
    func chromium(engine: HTTP2Limits.HTTP2Engine) async throws {
        let setup = try await Setup(engine: engine)
        let browser = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("Conformance/browser/browser_test.py").path
        let outcome = try await Curl.run([], shell: "python3 \(browser) --demo https://localhost:\(setup.tlsPort)/ 2>&1", timeout: 120)
        let closed = await setup.gateway.eventually { setup.gateway.gateway.registry.count == 0 }
        let page = setup.logLines("http").first { $0["path"] as? String == "/" }
        let socket = setup.logLines("websocket").first
        await setup.stop()
        #expect(outcome.body.contains(": ok"), "\(outcome.body)")
        #expect(page?["protocol"] as? String == "HTTP/2", "the page came over h2: \(String(describing: page))")
        // Chromium opens a WebSocket over the page's h2 connection when it advertises
        // SETTINGS_ENABLE_CONNECT_PROTOCOL; it did. Without the setting it opens an HTTP/1.1
        // connection for it.
        #expect(socket?["protocol"] as? String == "h2", "\(String(describing: socket))")
        #expect(closed)
    }

    @Test(
        "clients that vanish at every step (closed or reset): each stream and WebSocket is released and logged, a half-sent header block gets the idle GOAWAY, and no connection is left",
        arguments: HTTP2Limits.HTTP2Engine.allCases, [false, true]
    )
    func vanish(engine: HTTP2Limits.HTTP2Engine, abort: Bool) async throws {
        let setup = try await Setup(http2: "idle_timeout: 1s", engine: engine)
        var outcomes: [String: [String: Any]] = [:]
        for step in ["half-headers", "before-answer", "mid-response", "mid-upload", "reset-mid-response", "mid-websocket"] {
            outcomes[step] = try await setup.h2("vanish", ["step": step, "abort": abort, "linger": 4, "ready": "http://127.0.0.1:\(setup.http.port)/stats"])
        }
        let after = try await Curl.run(["-k", "--http2", "https://127.0.0.1:\(setup.tlsPort)/app/after"])
        let released = await setup.gateway.eventually {
            setup.gateway.gateway.openConnections == 0 && setup.gateway.gateway.registry.count == 0
        }
        let midFrame = setup.metric("sluice_websocket_closes_total", ["route": "echo", "ending": "vanished_mid_frame"])
        let lines = setup.logLines("http")
        await setup.stop()

        let halfHeaders = outcomes["half-headers"] ?? [:]
        // A half-sent header block waits no longer than the idle timeout: a graceful GOAWAY on
        // Sluice's layer; NIOHTTP2 sends its GOAWAY as PROTOCOL_ERROR, the block being cut.
        let goAwayCode = (halfHeaders["goaway"] as? [String: Any])?["error"] as? Int
        #expect(engine == .wire ? goAwayCode == 0 : goAwayCode != nil, "\(halfHeaders)")
        #expect(halfHeaders["closed"] as? Bool == true)
        #expect((outcomes["mid-response"]?["received"] as? Int ?? 0) >= 200_000, "\(outcomes)")
        #expect(outcomes["reset-mid-response"]?["other_status"] as? Int == 200, "the connection serves on after a reset: \(outcomes)")
        #expect(after.status == 200)
        #expect(outcomes["mid-websocket"]?["status"] as? Int == 200, "\(outcomes)")
        #expect(released, "every client connection and WebSocket is gone from the gateway")
        #expect(midFrame == 1, "the WebSocket whose client vanished mid-frame is counted so: \(midFrame)")
        func status(_ path: String) -> [Int] {
            lines.filter { ($0["path"] as? String)?.hasPrefix(path) == true }.compactMap { $0["status"] as? Int }
        }
        #expect(outcomes["before-answer"]?["backend_had_it"] as? Bool == true, "\(outcomes)")
        #expect(status("/app/slow") == [499], "\(lines)")
        #expect(status("/app/upload") == [499], "\(lines)")
        // Cut off after its head went out: logged with the status the client had begun to get.
        #expect(status("/app/download").count == 2, "\(lines)")
    }

    @Test(
        "Sluice's own HTTP/2 layer on reload and on drain: a graceful GOAWAY, the request in flight is answered, then the connection ends",
        arguments: ["reload", "drain"]
    )
    func wireGoAway(change: String) async throws {
        let setup = try await Setup(engine: .wire)
        // A request the backend answers after 3 s, on a connection that lingers after it until
        // Sluice closes it (up to 10 s: on a loaded machine the drain's GOAWAY can come later
        // than 2 s after the answer; the peer stops as soon as the connection is closed).
        async let answered = setup.h2("request", ["path": "/app/slow", "linger": 10])
        // Until the backend has the request (a poll that fails is simply made again; on a
        // loaded machine the peer's start and handshake alone have taken over 10 s).
        let inFlight = await setup.gateway.eventually(.seconds(30)) {
            let slow = try? await Curl.run(["http://127.0.0.1:\(setup.http.port)/stats"]).json?["slow"] as? Int
            return (slow ?? 0) >= 1
        }
        var reloadFailure: String?
        if change == "reload" {
            let changed = try ConfigurationLoader.parse(yaml: setup.yaml("max_concurrent_streams: 50"), baseDirectory: NSTemporaryDirectory())
            if case .failure(let failure) = await setup.gateway.gateway.reload(to: changed) { reloadFailure = "\(failure)" }
        } else {
            await setup.gateway.gateway.drain(stoppingParts: false)
        }
        let result = try await answered
        let lines = setup.logLines("http")
        await setup.stop()
        #expect(inFlight)
        #expect(reloadFailure == nil, "\(reloadFailure ?? "")")
        #expect(result["status"] as? Int == 200, "the request in flight is answered: \(result)")
        let goAway = try #require(result["goaway"] as? [String: Any], "\(result)")
        #expect(goAway["error"] as? Int == 0)
        #expect(goAway["last_stream"] as? Int == 1, "the stream in flight is named as served: \(goAway)")
        #expect(result["closed"] as? Bool == true, "the connection ends once its stream is done: \(result)")
        #expect(lines.contains { $0["path"] as? String == "/app/slow" && $0["status"] as? Int == 200 })
    }
}
