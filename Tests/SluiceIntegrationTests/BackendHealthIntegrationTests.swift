import Foundation
import Testing

/// Backends that misbehave on purpose (`Peers/health_peer.py`: answering 503, hanging after
/// accept, killed), behind a gateway with active checks, outlier detection and retries: clients
/// see no failed upgrade while a good backend exists, bad backends stop getting traffic and get
/// it back once well; an operator's drain, weights and hashing; `GET /backends` tells the truth.
@Suite("Backends that fail")
struct BackendHealthIntegrationTests {
    static let peer = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Peers/health_peer.py").path

    /// Backends named a, b, c…, each with a mode file the test writes.
    final class Backends: @unchecked Sendable {
        let directory: String
        var peers: [String: PythonPeer] = [:]
        let names: [String]

        init(_ names: [String], role: String = "backend") async throws {
            directory = try Scratch.directory("sluice-health-")
            self.names = names
            for name in names {
                try "good".write(toFile: "\(directory)/\(name)", atomically: true, encoding: .utf8)
                peers[name] = try await PythonPeer([role, name, "\(directory)/\(name)"], script: BackendHealthIntegrationTests.peer)
            }
        }

        func set(_ name: String, _ mode: String) throws {
            try mode.write(toFile: "\(directory)/\(name)", atomically: true, encoding: .utf8)
        }

        func kill(_ name: String) { peers[name]?.stop() }

        var urls: String { names.map { "\"ws://127.0.0.1:\(peers[$0]!.port)\"" }.joined(separator: ", ") }

        func stop() {
            for peer in peers.values { peer.stop() }
            try? FileManager.default.removeItem(atPath: directory)
        }
    }

    static func upgrades(_ gateway: TestGateway, _ count: Int, concurrency: Int = 8, path: String = "/ws", header: String? = nil) async throws -> [String: Any] {
        try await PythonPeer.run(
            ["upgrades", "127.0.0.1", "\(gateway.port("plain"))", "\(count)", "\(concurrency)", path] + (header.map { [$0] } ?? []),
            script: peer, timeout: 300
        )
    }

    /// An admin listener, a plain listener and route `ws` (`/ws`) to `backends`; `route` is one
    /// more line of the route (its `balance:`, `health:`).
    static func gateway(_ backends: Backends, route: String = "") async throws -> TestGateway {
        try await TestGateway(yaml: """
        admin: { address: 127.0.0.1:0 }
        listeners: [ { name: plain, address: "127.0.0.1:0" } ]
        routes:
          - name: ws
            match: { path_prefix: /ws }
            backends: [\(backends.urls)]
            \(route)
        """)
    }

    static func landed(_ result: [String: Any]) -> [String: Int] { result["landed"] as? [String: Int] ?? [:] }

    static func backends(_ gateway: TestGateway) async throws -> [String: String] {
        let answer = try await Curl.run([gateway.adminURL("/backends")])
        let routes = answer.json?["routes"] as? [[String: Any]] ?? []
        var states: [String: String] = [:]
        for backend in routes.first?["backends"] as? [[String: Any]] ?? [] {
            states[backend["url"] as? String ?? "?"] = backend["state"] as? String
        }
        return states
    }

    @Test("one backend answers 503, one hangs after accept, one dies: no client sees a failed upgrade; checks take them out; the healed one comes back")
    func sickBackends() async throws {
        let backends = try await Backends(["a", "b", "c", "d"])
        defer { backends.stop() }
        let gateway = try await TestGateway(yaml: """
        admin: { address: 127.0.0.1:0 }
        listeners: [ { name: plain, address: "127.0.0.1:0" } ]
        routes:
          - name: ws
            match: { path_prefix: /ws }
            backends: [\(backends.urls)]
            health: { path: /health, interval: 500ms, timeout: 500ms, rise: 2, fall: 2 }
            balance: { max_fails: 2, cool_down: 30s, max_ejection_percent: 75, slow_start: 1s }
            websocket: { max_connect_attempts: 4, handshake_timeout: 1s, connect_timeout: 1s }
        """)
        let before = try await Self.upgrades(gateway, 200)
        #expect(before["failures"] as? Int == 0, "\(before)")
        #expect(Set(Self.landed(before).keys) == ["a", "b", "c", "d"], "all four take traffic: \(before)")

        try backends.set("b", "503")
        try backends.set("c", "hang")
        backends.kill("d")
        // Right away, before any check has run: retries absorb every failure.
        let during = try await Self.upgrades(gateway, 200)
        #expect(during["failures"] as? Int == 0, "a client saw a failed upgrade: \(during)")
        #expect(Set(Self.landed(during).keys) == ["a"], "\(during)")

        // After fall × interval (and slack), the checks say which are down.
        let bURL = "ws://127.0.0.1:\(backends.peers["b"]!.port)"
        let sick = ["b", "c", "d"].map { "ws://127.0.0.1:\(backends.peers[$0]!.port)" }
        let downSeen = await gateway.eventually(.seconds(20)) {
            let states = (try? await Self.backends(gateway)) ?? [:]
            return sick.allSatisfy { states[$0] == "down" }
        }
        let statesNow = try await Self.backends(gateway)
        #expect(downSeen, "\(statesNow)")
        let metrics = try await Curl.run([gateway.adminURL("/metrics")]).body
        let upLines = metrics.split(separator: "\n").filter { $0.hasPrefix("sluice_backend_up{") }
        #expect(upLines.contains { $0.contains(bURL) && Double($0.split(separator: " ").last ?? "") == 0 }, "\(upLines)")
        #expect(metrics.contains("sluice_backend_check_duration_seconds_bucket"))
        // (Not `sluice_backend_retries_total`: when the client's first upgrade comes later than
        // fall × interval, which a loaded machine allows, the checks took the sick ones out first
        // and nothing was retried. The HTTP test below asserts the retries counter.)
        let after = try await Self.upgrades(gateway, 100)
        #expect(after["failures"] as? Int == 0 && Set(Self.landed(after).keys) == ["a"], "\(after)")

        // Healed: rise × interval later b takes traffic again.
        try backends.set("b", "good")
        let upAgain = await gateway.eventually(.seconds(20)) { (try? await Self.backends(gateway))?[bURL] == "up" }
        #expect(upAgain)
        let healed = await gateway.eventually(.seconds(30)) {
            let result = (try? await Self.upgrades(gateway, 60)) ?? [:]
            return (Self.landed(result)["b"] ?? 0) > 0
        }
        #expect(healed, "b never took traffic again")
        await gateway.stop()
    }

    @Test("passive health without checks: a backend answering 503 is ejected after max_fails and retried around; plain GETs are retried, a POST is not")
    func outlierDetectionAndPlainRetries() async throws {
        let backends = try await Backends(["a", "b"])
        defer { backends.stop() }
        let plain = try await Backends(["pa", "pb"], role: "http")
        defer { plain.stop() }
        let gateway = try await TestGateway(yaml: """
        admin: { address: 127.0.0.1:0 }
        listeners: [ { name: plain, address: "127.0.0.1:0" } ]
        routes:
          - name: ws
            match: { path_prefix: /ws }
            backends: [\(backends.urls)]
            balance: { max_fails: 3, cool_down: 5m }
          - name: app
            match: { path_prefix: /app }
            backends: [\(plain.urls.replacingOccurrences(of: "ws://", with: "http://"))]
            balance: { max_fails: 100 }
        """)
        try backends.set("b", "503")
        let result = try await Self.upgrades(gateway, 40, concurrency: 1)
        #expect(result["failures"] as? Int == 0 && Self.landed(result).keys.sorted() == ["a"], "\(result)")
        let states = try await Self.backends(gateway)
        #expect(states["ws://127.0.0.1:\(backends.peers["b"]!.port)"] == "ejected", "\(states)")
        let view = try await Curl.run([gateway.adminURL("/backends")]).body
        #expect(view.contains("status 503 to the upgrade"), "\(view)")
        let enable = try await Curl.run(["-X", "POST", gateway.adminURL("/backends/ws/1/enable")])
        #expect(enable.status == 200, "\(enable)")
        let enabled = try await Self.backends(gateway)["ws://127.0.0.1:\(backends.peers["b"]!.port)"]
        #expect(enabled == "up")

        // Plain requests: idempotent ones without a body are retried on the next backend after
        // a 503; a POST with a body is never sent twice (and 5xx to plain requests do not eject
        // unless plain_errors_fail says so).
        try plain.set("pb", "503")
        var gets: [Int] = []
        for _ in 0..<6 { gets.append(try await Curl.run(["http://127.0.0.1:\(gateway.port("plain"))/app/x"]).status) }
        #expect(gets.allSatisfy { $0 == 200 }, "\(gets)")
        var posts: [Int] = []
        for _ in 0..<4 { posts.append(try await Curl.run(["-d", "body", "http://127.0.0.1:\(gateway.port("plain"))/app/x"]).status) }
        #expect(posts.contains(503) && posts.contains(200), "a POST with a body is never sent twice: \(posts)")
        let metrics = try await Curl.run([gateway.adminURL("/metrics")]).body
        #expect(metrics.contains(#"sluice_backend_retries_total{route="app""#), "\(metrics.split(separator: "\n").filter { $0.contains("retries") })")
        let unknown = try await Curl.run(["-X", "POST", gateway.adminURL("/backends/ws/nope/drain")])
        #expect(unknown.status == 404 && unknown.body.contains("has no backend 'nope'"), "\(unknown.body)")
        await gateway.stop()
    }

    @Test("a backend that accepts upgrades and closes them at once with 1011 is ejected after max_fails")
    func earlyCloses() async throws {
        let backends = try await Backends(["a", "b"])
        defer { backends.stop() }
        let gateway = try await Self.gateway(backends, route: "balance: { max_fails: 2, cool_down: 5m }")
        try backends.set("b", "1011")
        let bURL = "ws://127.0.0.1:\(backends.peers["b"]!.port)"
        // Upgrades succeed (the 101 comes); the early closes count against b. Each client waits
        // for the backend's close before its own: a client that closed first would make the
        // WebSocket one the client ended, which says nothing against b.
        let early = try await PythonPeer.run(
            ["upgrades-heard", "127.0.0.1", "\(gateway.port("plain"))", "8", "1", "/ws"], script: Self.peer, timeout: 300
        )
        #expect(((early["closes"] as? [String: Int])?["1011"] ?? 0) >= 2, "b's closes reach the clients as 1011: \(early)")
        let ejected = await gateway.eventually(.seconds(10)) { (try? await Self.backends(gateway))?[bURL] == "ejected" }
        let view = try await Curl.run([gateway.adminURL("/backends")]).body
        #expect(ejected, "\(view)")
        #expect(view.contains("1011 right after its 101"), "\(view)")
        let after = try await Self.upgrades(gateway, 20)
        #expect(Set(Self.landed(after).keys) == ["a"], "\(after)")
        await gateway.stop()
    }

    @Test("drain of one backend with 500 live WebSockets: each gets 1012, spread over the window; new ones go elsewhere; enable brings it back", .loadTest)
    func drainBackend() async throws {
        let backends = try await Backends(["a", "b"])
        defer { backends.stop() }
        let gateway = try await Self.gateway(backends)
        let aURL = "ws://127.0.0.1:\(backends.peers["a"]!.port)"
        let holder = try StreamingPeer(script: Self.peer, arguments: ["hold", "127.0.0.1", "\(gateway.port("plain"))", "500", "/ws", "30"])
        defer { holder.stop() }
        _ = try await holder.line(startingWith: #"{"open""#)
        let drain = try await Curl.run(["-X", "POST", gateway.adminURL("/backends/ws/\(aURL.addingPercentEncoding(withAllowedCharacters: .alphanumerics)!)/drain?window=3s")])
        #expect(drain.status == 202, "\(drain.body)")
        let draining = drain.json?["websockets"] as? Int ?? 0
        #expect(draining > 150 && draining < 350, "about half of 500: \(draining)")
        let stateDuring = try await Self.backends(gateway)[aURL]
        #expect(stateDuring == "draining")
        let fresh = try await Self.upgrades(gateway, 50)
        #expect(Set(Self.landed(fresh).keys) == ["b"], "\(fresh)")
        let line = try await holder.line(startingWith: #"{"codes""#, timeout: .seconds(120))
        let held = try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any] ?? [:]
        let codes = held["codes"] as? [String: Int] ?? [:]
        #expect(codes["1012"] == draining, "\(held)")
        #expect(codes["open"] == 500 - draining, "b's WebSockets stay open: \(held)")
        #expect((held["spread"] as? Double ?? 0) > 1.5, "closes spread over the 3 s window: \(held)")
        let enable = try await Curl.run(["-X", "POST", gateway.adminURL("/backends/ws/0/enable")])
        #expect(enable.status == 200)
        let stateAfter = try await Self.backends(gateway)[aURL]
        #expect(stateAfter == "up")
        let again = try await Self.upgrades(gateway, 50)
        #expect(Set(Self.landed(again).keys) == ["a", "b"], "\(again)")
        await gateway.stop()
    }

    @Test("weights: 10,000 upgrades land within ±5% of 3:1:1; hashing by a header keeps each user on one backend", .loadTest)
    func weightsAndHashing() async throws {
        let backends = try await Backends(["a", "b", "c"])
        defer { backends.stop() }
        let ports = backends.names.map { backends.peers[$0]!.port }
        let gateway = try await TestGateway(yaml: """
        listeners: [ { name: plain, address: "127.0.0.1:0" } ]
        routes:
          - name: weighted
            match: { path_prefix: /ws }
            backends: [ { url: "ws://127.0.0.1:\(ports[0])", weight: 3 }, "ws://127.0.0.1:\(ports[1])", "ws://127.0.0.1:\(ports[2])" ]
          - name: hashed
            match: { path_prefix: /hashed }
            backends: [\(backends.urls)]
            balance: { hash: { header: X-User } }
        """)
        // Few at a time: the other suites run beside this one.
        let weighted = try await Self.upgrades(gateway, 10_000, concurrency: 4)
        #expect(weighted["failures"] as? Int == 0, "\(weighted)")
        let counts = Self.landed(weighted)
        let total = Double(counts.values.reduce(0, +))
        #expect(total == 10_000)
        #expect(abs(Double(counts["a"] ?? 0) / total - 0.6) < 0.05, "\(counts)")
        #expect(abs(Double(counts["b"] ?? 0) / total - 0.2) < 0.05, "\(counts)")
        #expect(abs(Double(counts["c"] ?? 0) / total - 0.2) < 0.05, "\(counts)")
        let hashed = try await Self.upgrades(gateway, 500, path: "/hashed", header: "X-User: user-{i}")
        var backendsPerUser: [String: Set<String>] = [:]
        for key in Self.landed(hashed).keys {
            let parts = key.split(separator: "|")
            backendsPerUser[String(parts[1]), default: []].insert(String(parts[0]))
        }
        #expect(backendsPerUser.count == 50, "\(hashed)")
        #expect(backendsPerUser.values.allSatisfy { $0.count == 1 }, "a user landed on two backends: \(backendsPerUser)")
        #expect(Set(backendsPerUser.values.flatMap { $0 }).count == 3, "users spread over the three")
        await gateway.stop()
    }
}

/// The operator's view: the dashboard page in headless Chromium, `/overview`, and `# HELP` on
/// every metric family.
@Suite("The admin dashboard")
struct DashboardTests {
    @Test("headless Chromium: the dashboard shows a live WebSocket the test opened, and its kick button closes it", .enabled(if: FileManager.default.isExecutableFile(atPath: "/usr/bin/chromium"), "needs chromium (apt)"))
    func dashboardInChromium() async throws {
        let backends = try await BackendHealthIntegrationTests.Backends(["a"])
        defer { backends.stop() }
        let tokenFile = Scratch.path("sluice-token-")
        let token = "dashboard-token-0123456789abcdef"
        try token.write(toFile: tokenFile, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(atPath: tokenFile) }
        let gateway = try await TestGateway(yaml: """
        admin: { address: 127.0.0.1:0, token_file: \(tokenFile) }
        listeners: [ { name: plain, address: "127.0.0.1:0" } ]
        routes:
          - name: chat
            match: { path_prefix: /chat }
            backends: [\(backends.urls)]
            health: { path: /health, interval: 1s, timeout: 1s }
        """)
        let session = try PythonSession()
        defer { session.stop() }
        #expect(try await session.open("watched", gateway.url("/chat/room"))["status"] as? Int == 101)
        let listing = try await Curl.run(["-H", "Authorization: Bearer \(token)", gateway.adminURL("/connections")])
        let id = try #require((listing.json?["connections"] as? [[String: Any]])?.first?["id"] as? Int, "\(listing.body)")
        let page = try await Curl.run([gateway.adminURL("/")])
        #expect(page.status == 200 && page.headers["content-type"]?.hasPrefix("text/html") == true && page.body.contains("<script>"))
        #expect(!page.body.contains("src=") && !page.body.contains("<link") && !page.body.contains("@import"), "the page loads nothing from elsewhere")
        let screenshot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("docs/dashboard.png").path
        let browser = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("Conformance/browser/browser_test.py").path
        let scratch = Scratch.path("sluice-dashboard-", suffix: ".png")
        defer { try? FileManager.default.removeItem(atPath: scratch) }
        let outcome = try await Curl.run([], shell: "python3 \(browser) --dashboard '\(gateway.adminURL("/"))#token=\(token)' \(id) \(scratch) 2>&1", timeout: 120)
        let result = try JSONSerialization.jsonObject(with: Data((outcome.body.split(separator: "\n").last ?? "").utf8)) as? [String: Any] ?? [:]
        let row = result["row"] as? String ?? ""
        let backendsShown = result["backends"] as? String ?? ""
        #expect(row.contains("chat"), "\(outcome.body)")
        #expect(backendsShown.contains("up"), "\(outcome.body)")
        #expect(result["row_gone"] as? Bool == true, "\(outcome.body)")
        let closed = try await session.send(["op": "wait-close", "id": "watched"])
        #expect(closed["close_code"] as? Int == 1008, "\(closed)")
        // The committed screenshot is refreshed when the page changes (SLUICE_UPDATE_SCREENSHOT=1).
        if ProcessInfo.processInfo.environment["SLUICE_UPDATE_SCREENSHOT"] == "1" {
            try? FileManager.default.removeItem(atPath: screenshot)
            try FileManager.default.copyItem(atPath: scratch, toPath: screenshot)
        }
        #expect((try? FileManager.default.attributesOfItem(atPath: scratch)[.size] as? Int) ?? 0 > 10_000, "a screenshot was taken")
        await gateway.stop()
    }

    @Test("/overview names listeners and routes; every sluice_* family in /metrics has a # HELP line")
    func overviewAndHelp() async throws {
        let backends = try await BackendHealthIntegrationTests.Backends(["a"])
        defer { backends.stop() }
        let gateway = try await TestGateway(yaml: """
        admin: { address: 127.0.0.1:0 }
        listeners: [ { name: plain, address: "127.0.0.1:0" } ]
        routes:
          - name: chat
            match: { path_prefix: /chat }
            backends: [\(backends.urls)]
            health: { path: /health, interval: 1s, timeout: 1s }
          - name: app
            match: { path_prefix: /app }
            backends: [\(backends.urls.replacingOccurrences(of: "ws://", with: "http://"))]
        """)
        // Traffic of every kind, so the families exist.
        _ = try await BackendHealthIntegrationTests.upgrades(gateway, 5, path: "/chat")
        _ = try await Curl.run(["http://127.0.0.1:\(gateway.port("plain"))/app/x"])
        _ = try await Curl.run(["http://127.0.0.1:\(gateway.port("plain"))/nowhere"])
        _ = await gateway.eventually(.seconds(5)) { (try? await Curl.run([gateway.adminURL("/metrics")]).body.contains("sluice_backend_check_duration")) ?? false }
        let overview = try await Curl.run([gateway.adminURL("/overview")])
        #expect((overview.json?["listeners"] as? [[String: Any]])?.first?["name"] as? String == "plain", "\(overview.body)")
        #expect((overview.json?["routes"] as? [[String: Any]])?.map { $0["name"] as? String } == ["chat", "app"], "\(overview.body)")
        let metrics = try await Curl.run([gateway.adminURL("/metrics")]).body
        let lines = metrics.split(separator: "\n")
        let families = Set(lines.filter { $0.hasPrefix("# TYPE sluice_") }.map { $0.split(separator: " ")[2] })
        let helped = Set(lines.filter { $0.hasPrefix("# HELP sluice_") }.map { $0.split(separator: " ")[2] })
        #expect(families.count >= 12, "\(families)")
        #expect(families.subtracting(helped).isEmpty, "no # HELP for \(families.subtracting(helped).sorted())")
        await gateway.stop()
    }
}
