import Foundation
import NIOHTTP1
import SluiceConfig
import Testing

@testable import Sluice

/// Backend health and choice with no sockets and no real time: the health state machine on
/// given clock values, the set's choice over thousands of requests, the check probe's reading.
@Suite("Backend health and choice")
struct BackendHealthTests {
    static let second: Int64 = 1_000_000_000

    static func set(_ count: Int, weights: [Int] = [], _ configure: (inout BalancingConfiguration) -> Void = { _ in }, health: HealthCheckConfiguration? = nil) -> BackendSet {
        var balance = BalancingConfiguration()
        configure(&balance)
        return BackendSet(backends: (0..<count).map { index in
            Backend(url: try! BackendURL.parse("http://127.0.0.1:\(9100 + index)"), host: "127.0.0.1", port: 9100 + index, path: "/", tls: nil, serverName: nil)
        }, weights: weights, balance: balance, health: health, routeName: "r")
    }

    @Test("checks: fall failures in a row take a backend down, rise passes bring it up; a pass in between resets the count")
    func checks() {
        var health = BackendHealth()
        #expect(health.state(now: 0) == .up)
        var changes: [Bool] = []
        changes.append(health.checkFailed(fall: 3))
        changes.append(health.checkFailed(fall: 3))
        changes.append(health.checkPassed(rise: 2, now: 1))  // resets the failures
        changes.append(health.checkFailed(fall: 3))
        changes.append(health.checkFailed(fall: 3))
        changes.append(health.checkFailed(fall: 3))
        #expect(changes == [false, false, false, false, false, true])
        #expect(health.state(now: 2) == .down)
        let first = health.checkPassed(rise: 2, now: 3)
        let second = health.checkPassed(rise: 2, now: 4)
        #expect(!first && second)
        #expect(health.state(now: 5) == .up)
        #expect(health.backSince == 4)
    }

    @Test("ejection: cool_down, doubling for each ejection that follows, capped by max_cool_down, reset after a quiet spell")
    func ejectionBackOff() {
        var balance = BalancingConfiguration()
        balance.coolDown = .seconds(10)
        balance.maxCoolDown = .seconds(35)
        var health = BackendHealth()
        let s = Self.second
        var lengths: [Duration?] = []
        lengths.append(health.eject(now: 0, balance: balance, mayEject: true))
        #expect(health.state(now: 9 * s) == .ejected && health.state(now: 10 * s) == .up)
        lengths.append(health.eject(now: 5 * s, balance: balance, mayEject: true))  // already ejected
        lengths.append(health.eject(now: 11 * s, balance: balance, mayEject: true))
        lengths.append(health.eject(now: 32 * s, balance: balance, mayEject: true))  // 40 s capped at 35
        lengths.append(health.eject(now: 68 * s, balance: balance, mayEject: false))  // the set's cap refuses
        // Longer than max_cool_down after the last ejection ended: back to the base.
        lengths.append(health.eject(now: 67 * s + 36 * s + 1, balance: balance, mayEject: true))
        #expect(lengths == [.seconds(10), nil, .seconds(20), .seconds(35), nil, .seconds(10)])
        #expect(health.ejectionsTotal == 4)
    }

    @Test("drain takes a backend out until enabled; enable also forgives an ejection")
    func drainAndEnable() {
        var health = BackendHealth()
        health.drain()
        #expect(health.state(now: 0) == .draining)
        _ = health.eject(now: 0, balance: BalancingConfiguration(), mayEject: true)
        health.enable(now: 1)
        #expect(health.state(now: 1) == .up)
    }

    @Test("round robin honours weights: shares within ±5% over 10,000 choices, smoothly interleaved")
    func weights() {
        let set = Self.set(3, weights: [3, 1, 1])
        var counts = [0, 0, 0]
        for _ in 0..<10_000 { counts[set.candidates(attempts: 3)[0]] += 1 }
        #expect(abs(Double(counts[0]) / 10_000 - 0.6) < 0.05, "\(counts)")
        #expect(abs(Double(counts[1]) / 10_000 - 0.2) < 0.05, "\(counts)")
        #expect(BackendSet.smoothSchedule([5, 1, 1]) == [0, 0, 1, 0, 2, 0, 0])
        // Every candidate list names each backend once, so retries reach every backend.
        #expect(Set(set.candidates(attempts: 3)).count == 3)
        // Least connections by in-flight per unit of weight.
        let least = Self.set(2, weights: [3, 1]) { $0.policy = .leastConnections }
        least.began(0)
        least.began(0)
        least.began(1)
        #expect(least.candidates(attempts: 2)[0] == 0, "2/3 is less than 1/1")
    }

    @Test("sticky cookie: pinned requests take no round-robin turn, so new clients between them still spread evenly")
    func pinnedRequestsTakeNoTurn() {
        let set = Self.set(2) { $0.sticky = .cookie(name: "sb") }
        var newClients = [0, 0]
        for _ in 0..<8 {
            // A pinned request (every second one), then a new client.
            #expect(set.candidates(attempts: 2, pin: .init(stickyCookie: set.stickyIDs[0]))[0] == 0)
            newClients[set.candidates(attempts: 2)[0]] += 1
        }
        #expect(newClients == [4, 4], "new clients: \(newClients)")
    }

    @Test("hashing by a key: one key always lands on one backend; adding a backend moves about 1/N of the keys, all to it")
    func hashing() {
        let three = Self.set(3) { $0.hash = .user }
        let four = Self.set(4) { $0.hash = .user }
        var moved = 0
        var spread = [0, 0, 0]
        for user in 0..<3000 {
            let key = Array("user-\(user)".utf8)
            let before = three.candidates(attempts: 1, pin: .init(hashKey: key))[0]
            #expect(three.candidates(attempts: 1, pin: .init(hashKey: key))[0] == before)
            spread[before] += 1
            let after = four.candidates(attempts: 1, pin: .init(hashKey: key))[0]
            if after != before {
                moved += 1
                #expect(after == 3)
            }
        }
        #expect(abs(Double(moved) / 3000 - 0.25) < 0.05, "moved \(moved) of 3000")
        #expect(spread.allSatisfy { abs(Double($0) / 3000 - 1.0 / 3) < 0.05 }, "\(spread)")
        // An unavailable backend's keys go elsewhere; the rest stay.
        three.drain(1)
        for user in 0..<300 {
            #expect(three.candidates(attempts: 1, pin: .init(hashKey: Array("user-\(user)".utf8)))[0] != 1)
        }
    }

    @Test("max_ejection_percent caps how many are ejected at once; a lone backend is never ejected; all draining leaves none")
    func ejectionCap() {
        let set = Self.set(4) {
            $0.maxFails = 1
            $0.maxEjectionPercent = 50
        }
        let now: Int64 = 1_000 * Self.second
        for index in 0..<3 { set.failed(index, reason: "503", now: now) }
        #expect([0, 1, 2].filter { set.isSkipped($0, now: now + 1) }.count == 2, "two of four at most")
        let lone = Self.set(1) { $0.maxFails = 1 }
        lone.failed(0, reason: "refused", now: now)
        #expect(!lone.isSkipped(0, now: now + 1))
        #expect(lone.candidates(attempts: 3, now: now + 1) == [0])
        lone.drain(0)
        #expect(lone.candidates(attempts: 3, now: now + 1) == [], "a lone backend draining is not tried")
        lone.enable(0)
        #expect(lone.candidates(attempts: 3, now: now + 1) == [0])
        let two = Self.set(2)
        two.drain(0)
        #expect(two.candidates(attempts: 2) == [1])
        two.drain(1)
        #expect(two.candidates(attempts: 2) == [])
        two.enable(0)
        #expect(two.candidates(attempts: 2) == [0])
    }

    @Test("every backend down or ejected: all are tried rather than none (except draining ones)")
    func allDown() {
        var health = HealthCheckConfiguration()
        health.fall = 1
        let set = Self.set(3, health: health)
        for index in 0..<3 { set.checked(index, passed: false, latency: .zero, reason: "status 503") }
        #expect(Set(set.candidates(attempts: 3)) == [0, 1, 2])
        set.checked(1, passed: true, latency: .zero, reason: "")
        set.checked(1, passed: true, latency: .zero, reason: "")
        #expect(set.candidates(attempts: 3) == [1], "the one up backend alone")
        #expect(set.view().map(\.state) == [.down, .up, .down])
        let lone = Self.set(1, health: health)
        lone.checked(0, passed: false, latency: .zero, reason: "status 503")
        #expect(lone.view().map(\.state) == [.down])
        #expect(lone.candidates(attempts: 3) == [0], "a lone backend down is tried all the same")
    }

    @Test("slow start: a backend back from ejection gets a reduced share that grows to its full share")
    func slowStart() {
        let set = Self.set(2) {
            $0.maxFails = 1
            $0.coolDown = .seconds(10)
            $0.slowStart = .seconds(100)
        }
        let start: Int64 = 10_000 * Self.second
        set.failed(0, reason: "timeout", now: start)
        func share(at now: Int64) -> Double {
            var first = 0
            for _ in 0..<4000 where set.candidates(attempts: 2, now: now)[0] == 0 { first += 1 }
            return Double(first) / 4000
        }
        let early = share(at: start + 20 * Self.second)  // 10 s after the ejection ended: 10%
        let late = share(at: start + 200 * Self.second)
        #expect(early < 0.2, "early share \(early)")
        #expect(abs(late - 0.5) < 0.05, "late share \(late)")
    }

    @Test("the check probe: expect_status ranges; a websocket check needs a valid 101, then the pong; bad answers fail")
    func probe() {
        var http = HealthProbe(mode: .http, expectStatus: [200...299, 404...404], key: "dGhlIHNhbXBsZSBub25jZQ==")
        let partial = http.received(Array("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n".utf8))
        let whole = http.received(Array("\r\n".utf8))
        #expect(partial == .wait && whole == .pass)
        var notFound = HealthProbe(mode: .http, expectStatus: [200...299, 404...404], key: "x")
        let notFoundStep = notFound.received(Array("HTTP/1.1 404 Not Found\r\n\r\n".utf8))
        #expect(notFoundStep == .pass)
        var failing = HealthProbe(mode: .http, expectStatus: [200...399], key: "x")
        let failingStep = failing.received(Array("HTTP/1.1 503 Service Unavailable\r\n\r\n".utf8))
        #expect(failingStep == .fail("status 503"))
        var garbage = HealthProbe(mode: .http, expectStatus: [200...399], key: "x")
        if case .fail = garbage.received(Array("SSH-2.0-OpenSSH\r\n\r\n".utf8)) {} else { Issue.record("garbage passed") }
        var endless = HealthProbe(mode: .http, expectStatus: [200...399], key: "x")
        if case .fail = endless.received([UInt8](repeating: 65, count: HealthProbe.maxHead + 1)) {} else { Issue.record("an endless head was held") }
        var silent = HealthProbe(mode: .http, expectStatus: [200...399], key: "x")
        if case .fail = silent.closed() {} else { Issue.record("a close without answer passed") }

        let key = "dGhlIHNhbXBsZSBub25jZQ=="
        let accept = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        var ws = HealthProbe(mode: .websocket, expectStatus: [], key: key)
        let upgraded = ws.received(Array("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nSec-WebSocket-Accept: \(accept)\r\n\r\n".utf8) + [0x81, 0x02, 0x68, 0x69])
        let skipped = ws.readFrames()  // a text frame is skipped
        let ponged = ws.received([0x8A, 0x00])
        #expect(upgraded == .ping && skipped == .wait && ponged == .pass)
        var wrongAccept = HealthProbe(mode: .websocket, expectStatus: [], key: key)
        if case .fail = wrongAccept.received(Array("HTTP/1.1 101 Switching Protocols\r\nSec-WebSocket-Accept: nope\r\n\r\n".utf8)) {} else {
            Issue.record("a wrong accept passed")
        }
        var closes = HealthProbe(mode: .websocket, expectStatus: [], key: key)
        _ = closes.received(Array("HTTP/1.1 101 Switching Protocols\r\nSec-WebSocket-Accept: \(accept)\r\n\r\n".utf8))
        if case .fail = closes.received([0x88, 0x02, 0x03, 0xF3]) {} else { Issue.record("a close instead of a pong passed") }
        var refused = HealthProbe(mode: .websocket, expectStatus: [], key: key)
        let refusedStep = refused.received(Array("HTTP/1.1 503 Busy\r\n\r\n".utf8))
        #expect(refusedStep == .fail("status 503 to the upgrade"))
    }

    @Test("config: weighted backends, health, hash and outlier settings decode; bad values name their key")
    func configuration() throws {
        let yaml = """
        listeners: [ { name: main, address: "127.0.0.1:0" } ]
        routes:
          - name: chat
            match: { path_prefix: / }
            backends: [ "ws://127.0.0.1:9001", { url: "ws://127.0.0.1:9002", weight: 3 } ]
            health: { path: /health, interval: 2s, timeout: 500ms, rise: 2, fall: 3, expect_status: [200-299, 404], mode: websocket }
            balance: { hash: { user: true }, max_ejection_percent: 34, slow_start: 30s, max_cool_down: 60s, retry_budget: 5s, plain_errors_fail: true }
        """
        let configuration = try ConfigurationLoader.parse(yaml: yaml, baseDirectory: "/tmp")
        let route = configuration.routes[0]
        #expect(route.weights == [1, 3])
        #expect(route.health?.mode == .websocket && route.health?.expectStatus == [200...299, 404...404] && route.health?.path == "/health")
        #expect(route.balance.hash == .user && route.balance.maxEjectionPercent == 34 && route.balance.slowStart == .seconds(30))
        #expect(route.balance.plainErrorsFail && route.balance.retryBudget == .seconds(5))
        let bad: [(String, String)] = [
            (#"backends: [ { url: "ws://127.0.0.1:9", weight: 0 } ]"#, "weight"),
            (#"backends: [ "ws://127.0.0.1:9" ]\n    health: { expect_status: [700] }"#, "expect_status"),
            (#"backends: [ "ws://127.0.0.1:9" ]\n    health: { interval: 1s, timeout: 2s }"#, "health"),
            (#"backends: [ "ws://127.0.0.1:9" ]\n    health: { mode: tcp }"#, "mode"),
            (#"backends: [ "ws://127.0.0.1:9" ]\n    balance: { sticky: ip, hash: { user: true } }"#, "hash"),
            (#"backends: [ "ws://127.0.0.1:9" ]\n    balance: { hash: { header: X-User, cookie: sid } }"#, "hash"),
        ]
        for (routeText, key) in bad {
            let text = "listeners: [ { name: main, address: \"127.0.0.1:0\" } ]\nroutes:\n  - name: r\n    match: { path_prefix: / }\n    \(routeText.replacingOccurrences(of: "\\n", with: "\n"))\n"
            #expect(throws: ConfigErrors.self, "\(routeText)") { try ConfigurationLoader.parse(yaml: text, baseDirectory: "/tmp") }
            do {
                _ = try ConfigurationLoader.parse(yaml: text, baseDirectory: "/tmp")
            } catch {
                #expect("\(error)".contains(key), "\(error) should name \(key)")
            }
        }
    }
}

@Suite("Metric help and the Grafana dashboard")
struct MetricHelpTests {
    @Test("# HELP is added before a # TYPE that has none; the Grafana dashboard only names metrics that exist")
    func helpAndDashboard() throws {
        let text = Array("# TYPE sluice_websockets_active gauge\nsluice_websockets_active 1\n# HELP x y\n# TYPE x counter\nx 2\n".utf8)
        let out = String(decoding: MetricHelp.addingMissing(to: text), as: UTF8.self)
        #expect(out.hasPrefix("# HELP sluice_websockets_active WebSockets relayed now, by route.\n# TYPE sluice_websockets_active gauge\n"), "\(out)")
        #expect(out.components(separatedBy: "# HELP x").count == 2, "an existing HELP is not doubled")
        let dashboard = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("conf/grafana-dashboard.json")
        let json = try String(contentsOf: dashboard, encoding: .utf8)
        _ = try JSONSerialization.jsonObject(with: Data(json.utf8))
        let names = Set(json.matches(of: /sluice_[a-z0-9_]+/).map { String($0.output) }.map { name in
            name.hasSuffix("_bucket") ? String(name.dropLast(7)) : name
        })
        #expect(!names.isEmpty)
        #expect(names.subtracting(MetricHelp.texts.keys).sorted().filter { !["sluice_config_info", "sluice_config_last_reload_success_timestamp_seconds"].contains($0) } == [])
    }
}
